"""S3 and S3-compatible servers (MinIO, moto) through botocore.

Imported only when a bucket URL says `s3://`, so workers on other backends never pay for it. The
client is botocore's own, without boto3 on top: boto3 only adds its resource layer and the
`upload_file`/`download_file` helpers (~70 ms of imports at start, +~10 MB), which wrap the same
s3transfer manager used here for large files. Objects below the multipart thresholds move in one
PutObject / one GetObject streamed in 256 KiB pieces, the requests s3transfer would make for them
too, minus its HeadObject before a download (`download` has just asked for the size) and its
thread pool, built for a job's first file (~50 ms on a cold worker). Larger ones go through
s3transfer (multipart above 16 MB, ranged parts of 64 MB, bounded in-flight parts), so memory
stays flat whatever the file size. botocore's `standard` retry mode handles throttling and 5xx
inside one call; the shared retry loop in `base` adds a time budget on top (e.g. a server restart).
"""

from __future__ import annotations

import mimetypes
import os
from typing import Any
from urllib.parse import quote

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    DataNotFoundError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..settings import Settings
from .base import (
    DENIED,
    FULL,
    MISSING,
    NO_BUCKET,
    PERMANENT,
    TRANSIENT,
    NoBucket,
    StorageClient,
    exception_chain,
)

PART_BYTES = 16 * 1024 * 1024
DOWNLOAD_PART_BYTES = 64 * 1024 * 1024
#: Bytes per read of a streamed GetObject body (and s3transfer's io_chunksize).
IO_CHUNK_BYTES = 256 * 1024
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 limit
_THROTTLE = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
             "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
           "AllAccessDisabled", "AccountProblem", "403", "401"}
_MISSING = {"NoSuchKey", "404", "NotFound"}
# S3-compatible stores (MinIO, Ceph) answer these when a disk or bucket quota is full; AWS has none.
_FULL = {"QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "InsufficientStorage",
         "StorageFull"}
# DENIED codes that are about our credentials, not about write permission on the bucket.
_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AccountProblem", "401"}
# IncompleteReadError: a body that ended short of its Content-Length (s3transfer retries it too).
_NETWORK = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError,
            BotoConnectionError, HTTPClientError, IncompleteReadError, ConnectionError, TimeoutError)


class _S3Loader(botocore.loaders.Loader):
    """botocore's data loader, for a session that only ever builds S3 clients.

    Before it loads a model, botocore checks the service is known by listing every service's
    folder in its data directory (~400 of them, thousands of stat calls): ~16 ms of a cold
    worker's CPU, once for the API model and once for the endpoint rules. This loader knows S3
    alone and asks only the folder of the service asked for; every model still comes from the
    same files and paths. Other services stay reachable: the credential chain builds its own
    clients through the same session (STS for assume-role and IRSA web identity, SSO, sign-in).
    """

    @classmethod
    def for_session(cls, session: botocore.session.Session) -> _S3Loader:
        """A loader over the paths the session's own would search (AWS_DATA_PATH / `data_path` first)."""
        extra = session.get_config_variable("data_path")
        paths = [os.path.expanduser(os.path.expandvars(p)) for p in extra.split(os.pathsep)] if extra else []
        return cls(extra_search_paths=paths)

    def list_available_services(self, type_name: str) -> list[str]:
        return _ServicesOnDisk(self, type_name)


class _ServicesOnDisk(list):
    """The "known services" botocore checks a name against, answered for that one name.

    botocore only asks `name in known`; a service is known when its folder holds a model of the
    type asked for, as with the full listing. Iterating (an error message) lists S3 alone.
    """

    def __init__(self, loader: botocore.loaders.Loader, type_name: str) -> None:
        super().__init__(["s3"] if loader.list_api_versions("s3", type_name) else [])
        self._loader, self._type_name = loader, type_name

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name.replace("-", "").isalnum():
            return False
        try:
            return bool(self._loader.list_api_versions(name, self._type_name))
        except DataNotFoundError:
            return False


class S3Client(StorageClient):
    """One bucket (and prefix) on S3 or an S3-compatible endpoint."""

    scheme = "s3"

    def __init__(self, url: str, bucket: str, prefix: str, settings: Settings) -> None:
        super().__init__(url, bucket, prefix, settings)
        self.endpoint = settings.AWS_ENDPOINT_URL or os.environ.get("AWS_ENDPOINT_URL", "")
        config = Config(
            retries={"mode": "standard", "total_max_attempts": 3},  # then the capped, budgeted loop in base
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=16,
            signature_version="s3v4",
            # No SHA-256 of every body over plain-http endpoints (it halves throughput); the CRC32
            # checksum botocore adds to uploads still verifies the bytes end to end.
            s3={"addressing_style": "path" if self.endpoint else "auto", "payload_signing_enabled": False},
        )
        keys = {}
        if settings.AWS_ACCESS_KEY_ID:  # else botocore's credential chain (env, profile, IRSA, instance role)
            keys = {"aws_access_key_id": settings.AWS_ACCESS_KEY_ID,
                    "aws_secret_access_key": settings.AWS_SECRET_ACCESS_KEY,
                    "aws_session_token": os.environ.get("AWS_SESSION_TOKEN") or None}
        session = botocore.session.Session()
        session.register_component("data_loader", _S3Loader.for_session(session))
        self.client = session.create_client("s3", region_name=settings.AWS_REGION or None,
                                            endpoint_url=self.endpoint or None, config=config, **keys)

    def _manager(self, kind: str) -> Any:
        """A new s3transfer manager for one large upload or download (a `with` block shuts its threads down).

        Parts stream from the file and to it in 256 KiB pieces (at most max_io_queue_size of them
        queued), so memory is bounded by concurrency, not by part or file size. Downloads use
        fewer, larger ranged GETs: S3-compatible servers that copy the object per range stay fast.
        """
        from s3transfer.manager import TransferConfig, TransferManager

        part = PART_BYTES if kind == "upload" else DOWNLOAD_PART_BYTES
        return TransferManager(self.client, TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_request_concurrency=4, max_io_queue_size=64,
            io_chunksize=IO_CHUNK_BYTES))

    def _stat(self, name: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=name)["ContentLength"])
        except ClientError as exc:
            if self._code(exc) not in _MISSING:
                raise
        # HEAD answers a bare 404 for a missing bucket too: tell the two apart.
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if self._status(exc) == 404:
                raise NoBucket() from None
            raise
        return None

    def _warm(self, name: str) -> None:
        self.client.head_object(Bucket=self.bucket, Key=name)  # 404 (403 without s3:ListBucket) expected

    def _get(self, name: str, dest_path: str, size: int) -> None:
        if size >= DOWNLOAD_PART_BYTES:  # s3transfer makes its own HeadObject (it needs the ETag too)
            with self._manager("download") as manager:
                manager.download(self.bucket, name, dest_path).result()
            return
        body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
        try:
            with open(dest_path, "wb") as out:
                out.writelines(body.iter_chunks(IO_CHUNK_BYTES))
        finally:
            body.close()

    def _put(self, path: str, name: str) -> None:
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        extra = {"ContentType": content_type}
        if self.public_acl:  # OUTPUT_URL_MODE=public: readable by anyone at `public_url`
            extra["ACL"] = "public-read"
        try:
            self._send(path, name, extra)
        except Exception as exc:
            problem = self._acl_refusal(exc) if "ACL" in extra else None
            if problem is None:
                raise
            self._refuse_acl(problem)
            extra.pop("ACL")
            self._send(path, name, extra)

    def _send(self, path: str, name: str, extra: dict[str, str]) -> None:
        """One PutObject below PART_BYTES (the file is the body), else s3transfer's multipart upload."""
        if os.path.getsize(path) >= PART_BYTES:
            with self._manager("upload") as manager:
                manager.upload(path, self.bucket, name, extra_args=extra).result()
            return
        with open(path, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=body, **extra)

    def _acl_refusal(self, exc: BaseException) -> str | None:
        """Why an upload that asked for an ACL was refused because of the ACL, else None.

        AWS answers AccessControlListNotSupported on "bucket owner enforced" buckets and AccessDenied
        when Block Public Access refuses public ACLs; the latter is told apart by asking the bucket.
        """
        err = next((e for e in exception_chain(exc) if isinstance(e, ClientError)), None)
        if err is None:
            return None
        if self._code(err) == "AccessControlListNotSupported":
            return "has S3 Object Ownership 'bucket owner enforced', which disables object ACLs"
        if self._code(err) == "AccessDenied":
            try:
                return self._acl_problem()
            except Exception:  # noqa: BLE001 - cannot ask: report the original denial
                return None
        return None

    def _acl_problem(self) -> str | None:
        try:
            rules = self.client.get_bucket_ownership_controls(Bucket=self.bucket)["OwnershipControls"]["Rules"]
        except ClientError as exc:
            if self._code(exc) != "OwnershipControlsNotFoundError":
                raise
            rules = []
        if any(rule.get("ObjectOwnership") == "BucketOwnerEnforced" for rule in rules):
            return "has S3 Object Ownership 'bucket owner enforced', which disables object ACLs"
        try:
            block = self.client.get_public_access_block(Bucket=self.bucket)["PublicAccessBlockConfiguration"]
        except ClientError as exc:
            if self._code(exc) != "NoSuchPublicAccessBlockConfiguration":
                raise
            block = {}
        for flag in ("BlockPublicAcls", "IgnorePublicAcls"):
            if block.get(flag):
                return f"has S3 Block Public Access {flag} on, which defeats public-read ACLs"
        return None

    def _remove(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=name)

    def _sign(self, name: str, ttl: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=min(ttl, MAX_PRESIGN_SECONDS)
        )

    def _public(self, name: str) -> str:
        if self.endpoint:
            return f"{self.endpoint.rstrip('/')}/{self.bucket}/{quote(name)}"
        region = self.settings.AWS_REGION or "us-east-1"
        if "." in self.bucket:  # a dotted name breaks the virtual-hosted TLS certificate: path style
            return f"https://s3.{region}.amazonaws.com/{self.bucket}/{quote(name)}"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{quote(name)}"

    @staticmethod
    def _code(exc: ClientError) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    @staticmethod
    def _status(exc: ClientError) -> int:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)

    def _classify(self, exc: BaseException) -> str | None:
        for err in exception_chain(exc):
            if isinstance(err, ClientError):
                code, status = self._code(err), self._status(err)
                if code == "NoSuchBucket":
                    return NO_BUCKET
                if code in _MISSING or status == 404:
                    return MISSING
                if code in _FULL or status == 507:
                    return FULL
                if code in _DENIED or status in (401, 403):
                    return DENIED
                if code in _THROTTLE or status == 429 or status >= 500:
                    return TRANSIENT
                return PERMANENT
            if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
                return DENIED
            if isinstance(err, _NETWORK):
                return TRANSIENT
        if any(type(e).__name__ == "RetriesExceededError" for e in exception_chain(exc)):
            return TRANSIENT
        return None

    def _credentials_problem(self, exc: BaseException) -> bool:
        for err in exception_chain(exc):
            if isinstance(err, ClientError):
                return self._code(err) in _CREDENTIALS or self._status(err) == 401
            if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
                return True
        return False

    def _describe(self, exc: BaseException) -> str:
        for err in exception_chain(exc):
            if isinstance(err, ClientError):
                return f"{self._code(err) or 'error'}, HTTP {self._status(err)}"
            if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
                return "no usable AWS credentials"
            if isinstance(err, _NETWORK):
                return type(err).__name__
        return type(exc).__name__
