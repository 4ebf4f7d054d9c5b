"""Google Cloud Storage through google-cloud-storage (imported only for `gs://` buckets).

Uploads above 8 MB are resumable in 8 MB chunks and downloads stream to disk, so memory stays
flat. Every upload carries `if_generation_match` (the generation we saw, 0 when absent), which is
what makes the library's own retries safe; our retry loop in `base` re-reads the generation on
each attempt. `STORAGE_EMULATOR_HOST` points the client at an emulator with anonymous
credentials. Signing needs service-account credentials (GOOGLE_APPLICATION_CREDENTIALS) or, on
GCE/GKE, a service-account identity allowed to call IAM signBlob.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from datetime import timedelta
from urllib.parse import quote

import google.auth.exceptions as auth_exc
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials, Signing
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from ..settings import Settings
from .base import (
    DENIED,
    FULL,
    MISSING,
    PERMANENT,
    TRANSIENT,
    NoBucket,
    StorageAccessError,
    StorageClient,
    exception_chain,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads require
MAX_SIGN_SECONDS = 7 * 24 * 3600  # V4 signing limit
TIMEOUT = (5.0, 60.0)  # connect, read seconds
_TRANSIENT_API = (gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway, gexc.ServiceUnavailable,
                  gexc.GatewayTimeout, gexc.RetryError, gexc.PreconditionFailed)
_NETWORK = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError, auth_exc.TransportError, ConnectionError, TimeoutError)


def _emulator_url(host: str) -> str:
    return host.rstrip("/") if "://" in host else f"http://{host.rstrip('/')}"


class GCSClient(StorageClient):
    """One bucket (and prefix) on Google Cloud Storage or the emulator."""

    scheme = "gs"

    def __init__(self, url: str, bucket: str, prefix: str, settings: Settings) -> None:
        super().__init__(url, bucket, prefix, settings)
        host = settings.STORAGE_EMULATOR_HOST or os.environ.get("STORAGE_EMULATOR_HOST", "")
        self.emulator = _emulator_url(host) if host else ""
        self._signing: tuple | None = None
        if self.emulator:
            self.client = storage.Client(project="redis-consumer", credentials=AnonymousCredentials(),
                                         client_options={"api_endpoint": self.emulator})
        elif settings.GOOGLE_APPLICATION_CREDENTIALS:
            creds = self._service_account()
            self.client = storage.Client(project=creds.project_id, credentials=creds)
        else:
            try:
                self.client = storage.Client(project=None)
            except auth_exc.DefaultCredentialsError:
                raise StorageAccessError(
                    f"No Google credentials were found for {url}; ask the operator to set "
                    "GOOGLE_APPLICATION_CREDENTIALS or give the pod a service-account identity."
                ) from None
        self._bucket = self.client.bucket(bucket)
        inner = min(10.0, max(settings.STORAGE_RETRY_TIMEOUT, 0.5))
        retry = DEFAULT_RETRY.with_delay(initial=0.25, maximum=max(settings.RETRY_BACKOFF_CAP, 0.25))
        self._retry: Retry = retry.with_timeout(inner) if hasattr(retry, "with_timeout") else retry.with_deadline(inner)

    def _service_account(self):
        from google.oauth2 import service_account

        path = self.settings.GOOGLE_APPLICATION_CREDENTIALS
        try:
            return service_account.Credentials.from_service_account_file(
                path, scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
            )
        except (OSError, ValueError, KeyError) as exc:
            raise StorageAccessError(
                f"The service-account file named by GOOGLE_APPLICATION_CREDENTIALS could not be loaded "
                f"({type(exc).__name__}); ask the operator to fix it."
            ) from None

    def _stat(self, name: str) -> int | None:
        blob = self._bucket.get_blob(name, timeout=TIMEOUT, retry=self._retry)
        if blob is not None:
            return int(blob.size or 0)
        if not self._bucket.exists(timeout=TIMEOUT, retry=self._retry):
            raise NoBucket()
        return None

    def _warm(self, name: str) -> None:
        self._bucket.get_blob(name, timeout=TIMEOUT, retry=None)  # None (a miss) expected

    def _get(self, name: str, dest_path: str, size: int) -> None:
        self._bucket.blob(name).download_to_filename(dest_path, timeout=TIMEOUT, retry=self._retry)

    def _put(self, path: str, name: str) -> None:
        current = self._bucket.get_blob(name, timeout=TIMEOUT, retry=self._retry)
        generation = int(current.generation) if current is not None and current.generation else 0
        blob = self._bucket.blob(name, chunk_size=CHUNK_BYTES)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        # OUTPUT_URL_MODE=public: the object gets the publicRead ACL in the same request, as the
        # kiosk uploads (kiosk-redis-consumer 0.17.2 redis_consumer/storage.py:258).
        acl = "publicRead" if self.public_acl else None
        try:
            try:
                blob.upload_from_filename(path, content_type=content_type, if_generation_match=generation,
                                          predefined_acl=acl, timeout=TIMEOUT, retry=self._retry)
            except gexc.BadRequest as exc:
                if acl is None or "uniform bucket-level access" not in str(exc).lower():
                    raise
                self._refuse_acl("has uniform bucket-level access, which disables object ACLs")
                blob.upload_from_filename(path, content_type=content_type, if_generation_match=generation,
                                          timeout=TIMEOUT, retry=self._retry)
        except gexc.NotFound:
            raise NoBucket() from None

    def _acl_problem(self) -> str | None:
        bucket = self.client.get_bucket(self.bucket, timeout=TIMEOUT, retry=self._retry)
        config = bucket.iam_configuration
        if config.uniform_bucket_level_access_enabled:
            return "has uniform bucket-level access, which disables object ACLs"
        if getattr(config, "public_access_prevention", "") == "enforced":
            return "has public access prevention enforced, which refuses public ACLs"
        return None

    def _remove(self, name: str) -> None:
        try:
            self._bucket.blob(name).delete(timeout=TIMEOUT, retry=self._retry)
        except gexc.NotFound:
            pass

    def _signer(self) -> tuple:
        """(kwargs for generate_signed_url) or () when only an unsigned emulator URL is possible."""
        if self._signing is None:
            if self.settings.GOOGLE_APPLICATION_CREDENTIALS:
                self._signing = ({"credentials": self._service_account()},)
            else:
                creds = getattr(self.client, "_credentials", None)
                if isinstance(creds, Signing) and not isinstance(creds, AnonymousCredentials):
                    self._signing = ({"credentials": creds},)
                elif getattr(creds, "service_account_email", None):
                    self._signing = ({"iam": creds},)
                elif self.emulator:
                    log.warning("no service-account credentials: emulator URLs are returned unsigned")
                    self._signing = ()
                else:
                    raise StorageAccessError(
                        "Signing GCS result URLs needs service-account credentials; ask the operator to set "
                        "GOOGLE_APPLICATION_CREDENTIALS or OUTPUT_URL_MODE=public or key."
                    )
        return self._signing

    def _sign(self, name: str, ttl: int) -> str:
        signer = self._signer()
        if not signer:
            return self._public(name)
        kwargs = dict(signer[0])
        creds = kwargs.pop("iam", None)
        if creds is not None:  # GCE/GKE identity: sign through IAM signBlob with a fresh token
            import google.auth.transport.requests

            if not creds.valid:
                creds.refresh(google.auth.transport.requests.Request())
            kwargs = {"service_account_email": creds.service_account_email, "access_token": creds.token}
        if self.emulator:
            kwargs["api_access_endpoint"] = self.emulator
        return self._bucket.blob(name).generate_signed_url(
            version="v4", expiration=timedelta(seconds=min(ttl, MAX_SIGN_SECONDS)), method="GET", **kwargs
        )

    def _public(self, name: str) -> str:
        base = self.emulator or "https://storage.googleapis.com"
        return f"{base}/{self.bucket}/{quote(name)}"

    @staticmethod
    def _status(err: BaseException) -> int:
        code = getattr(err, "code", None)
        if isinstance(code, int):
            return code
        response = getattr(err, "response", None)
        return int(getattr(response, "status_code", 0) or 0)

    def _classify(self, exc: BaseException) -> str | None:
        for err in exception_chain(exc):
            if isinstance(err, gexc.NotFound):
                return MISSING
            over_quota = isinstance(err, gexc.Forbidden) and "quota" in str(getattr(err, "message", "")).lower()
            if over_quota or self._status(err) == 507:
                return FULL
            if isinstance(err, (gexc.Forbidden, gexc.Unauthorized, auth_exc.RefreshError,
                                auth_exc.DefaultCredentialsError)):
                return DENIED
            if isinstance(err, (_TRANSIENT_API, _NETWORK)):
                return TRANSIENT
            if isinstance(err, gexc.GoogleAPICallError):
                status = self._status(err)
                return TRANSIENT if status == 429 or status >= 500 else PERMANENT
            if type(err).__name__ in ("InvalidResponse", "DataCorruption"):
                status = self._status(err)
                if status == 404:
                    return MISSING
                if status in (401, 403):
                    return DENIED
                return TRANSIENT if status in (0, 408, 429) or status >= 500 else PERMANENT
        return None

    def _credentials_problem(self, exc: BaseException) -> bool:
        return any(isinstance(err, (gexc.Unauthorized, auth_exc.RefreshError, auth_exc.DefaultCredentialsError))
                   for err in exception_chain(exc))

    def _describe(self, exc: BaseException) -> str:
        for err in exception_chain(exc):
            status = self._status(err)
            if status:
                return f"{type(err).__name__}, HTTP {status}"
            if isinstance(err, _NETWORK):
                return type(err).__name__
        return type(exc).__name__
