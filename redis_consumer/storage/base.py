"""The one storage interface every backend implements, with the shared policy around it.

Backends only move bytes (`_stat`, `_get`, `_put`, `_remove`, `_sign`, `_public`; optionally
`_link` and `_move`) and say what kind of failure an exception is (`_classify`). Everything that must behave the same on S3, GCS and
local folders lives here: key confinement, allowed input prefixes, the size check before a
download, atomic local writes, retries with capped backoff and full jitter, and error messages
that name the key but never a credential or a signed URL.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..errors import TransientError, UserError, quote
from ..logs import scrub
from ..settings import Settings
from ..utils.backoff import full_jitter
from .keys import check_allowed, confine, full_key

log = logging.getLogger(__name__)
T = TypeVar("T")

# What `_classify` may answer.
TRANSIENT = "transient"  # throttling, 5xx, connection reset/refused, timeouts: retry
MISSING = "missing"  # the object does not exist
DENIED = "denied"  # 401/403, missing credentials: retrying will not help
NO_BUCKET = "no-bucket"  # the bucket itself does not exist
PERMANENT = "permanent"  # any other refusal (4xx): fail fast
FULL = "full"  # no space left / quota exceeded: a system error (the job is retried later)
READ_ONLY = "read-only"  # the store cannot be written at all: an operator problem (system error)
WRITE_DENIED = "write-denied"  # DENIED while writing with working credentials (e.g. a policy): operator problem
WRITE_ACTIONS = ("uploading", "deleting")
# Local-disk errno while downloading: the worker's scratch directory, not the bucket, is the problem.
_SCRATCH_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system"}

BACKOFF_BASE = 0.25  # seconds; retry n waits uniform(0, min(cap, base * 2**n))


class NoBucket(Exception):
    """Raised by a backend that found the bucket itself missing; `_call` treats it as NO_BUCKET."""


class StorageAccessError(UserError):
    """The bucket refused us (permissions, credentials, missing bucket): failing fast beats retrying."""


class StorageWriteError(TransientError):
    """The store refuses writes (read-only, no write permission): a system error the operator must fix.

    It is not the user's fault, so the job is retried and then failed with `failure_type=system`;
    the reason names the bucket and the cause instead of "internal error (OSError)".
    """


class StorageClient(ABC):
    """A bucket (plus optional prefix) that jobs read inputs from and write results to."""

    scheme: str = ""

    def __init__(self, url: str, bucket: str, prefix: str, settings: Settings) -> None:
        self._url = url
        self.bucket = bucket
        self.prefix = prefix
        self.settings = settings
        self._secrets = [s for s in settings.secret_values() if s]
        # OUTPUT_URL_MODE=public uploads results public-read, as the kiosk does (kiosk-redis-consumer
        # 0.17.2 redis_consumer/storage.py:258); off once the bucket is found to refuse object ACLs.
        self._acl_refused: str | None = None

    def __repr__(self) -> str:  # never shows credentials
        return f"<{type(self).__name__} {self._url}>"

    @property
    def url(self) -> str:
        """The bucket URL this client serves (`s3://bucket/prefix`, `gs://...`, `file:///dir`)."""
        return self._url

    # ---- public interface ----

    def download(self, key: str, dest_dir: str, *, check_prefixes: bool = True,
                 deadline: float | None = None, read_only: bool = False) -> str:
        """Stream the object `key` into `dest_dir` and return the local path.

        The key must be inside the bucket and under ALLOWED_INPUT_PREFIXES (pass
        `check_prefixes=False` for objects the workers wrote themselves, e.g. children's outputs);
        the object's size is checked against MAX_INPUT_BYTES before any byte is transferred.
        `deadline` (seconds left for the job) shortens the retry budget of every call like this.
        `read_only=True` promises the caller never writes to the file: a folder bucket may then
        hard-link its own file instead of copying it (`_link`).
        """
        give_up_at = self._give_up_at(deadline)
        rel = self._confine(key)
        if check_prefixes:
            check_allowed(rel, self.settings.ALLOWED_INPUT_PREFIXES)
        name = full_key(self.prefix, rel)
        size = self._call("reading", rel, lambda: self._stat(name), give_up_at)
        if size is None:
            raise self._missing(rel)
        self._check_size(rel, size)
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, os.path.basename(rel))
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=dest_dir)
        os.close(fd)
        try:
            self._call("downloading", rel, lambda: (read_only and self._link(name, tmp)) or self._get(name, tmp, size),
                       give_up_at)
            self._check_size(rel, os.path.getsize(tmp))  # the object may have grown since the check
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        log.debug("downloaded %s (%d bytes)", rel, size)
        return dest

    def upload(self, path: str, key: str, *, deadline: float | None = None, move: bool = False) -> tuple[str, str]:
        """Stream the local file `path` to `key` (overwriting) and return `(key, url_for(key))`.

        `move=True` gives `path` up (a job's result in its scratch folder): a folder bucket may
        then rename it into place instead of copying it (`_move`), and `path` may be gone after.
        """
        rel = self._confine(key)
        if not os.path.isfile(path):
            raise UserError(f"The result file {quote(os.path.basename(path))} to upload as '{rel}' does not exist.")
        name = full_key(self.prefix, rel)
        size = os.path.getsize(path)
        self._call("uploading", rel, lambda: (move and self._move(path, name)) or self._put(path, name),
                   self._give_up_at(deadline))
        log.debug("uploaded %s (%d bytes)", rel, size)
        return rel, self.url_for(rel)

    def exists(self, key: str, *, deadline: float | None = None) -> bool:
        """Whether the object `key` exists."""
        return self.size_or_none(key, deadline=deadline) is not None

    def size(self, key: str, *, deadline: float | None = None) -> int:
        """Size of the object `key` in bytes; `UserError` if it does not exist."""
        size = self.size_or_none(key, deadline=deadline)
        if size is None:
            raise self._missing(self._confine(key))
        return size

    def size_or_none(self, key: str, *, deadline: float | None = None) -> int | None:
        """Size of the object `key` in bytes, or None when it does not exist."""
        rel = self._confine(key)
        return self._call("reading", rel, lambda: self._stat(full_key(self.prefix, rel)), self._give_up_at(deadline))

    def delete(self, key: str, *, deadline: float | None = None) -> None:
        """Remove the object `key` (no error when it is already gone)."""
        rel = self._confine(key)
        self._call("deleting", rel, lambda: self._remove(full_key(self.prefix, rel)), self._give_up_at(deadline))

    def signed_url(self, key: str, ttl: int | None = None) -> str:
        """A URL that downloads `key` without credentials for `ttl` seconds (default SIGNED_URL_TTL)."""
        rel = self._confine(key)
        seconds = int(ttl if ttl is not None else self.settings.SIGNED_URL_TTL)
        if seconds < 1:
            raise ValueError("ttl must be at least one second")
        # Signing is local for S3 and GCS key files, a network call (IAM signBlob) on GCE/GKE identities.
        return self._call("signing", rel, lambda: self._sign(full_key(self.prefix, rel), seconds))

    def public_url(self, key: str) -> str:
        """The unsigned URL of `key` (works only where the bucket is public)."""
        return self._public(full_key(self.prefix, self._confine(key)))

    @property
    def public_acl(self) -> bool:
        """Whether uploads carry a public-read ACL (OUTPUT_URL_MODE=public and the bucket allows ACLs)."""
        return self.settings.OUTPUT_URL_MODE == "public" and self._acl_refused is None

    def check_public_access(self) -> str | None:
        """At worker start: None when public result URLs can work, else the one-line problem (logged once).

        Only asks in OUTPUT_URL_MODE=public. A bucket that forbids object ACLs (GCS uniform
        bucket-level access, S3 Object Ownership "bucket owner enforced", S3 Block Public Access)
        makes the worker upload without an ACL from then on, so jobs still finish; their URLs then
        work only if a bucket policy makes `output/` readable.
        """
        if self.settings.OUTPUT_URL_MODE != "public":
            return None
        try:
            problem = self._acl_problem()
        except Exception as exc:  # noqa: BLE001 - cannot tell (no permission to read the bucket's settings, outage)
            log.info("could not read the bucket settings of %s to check public result URLs (%s)",
                     self.url, self._clean(self._describe(exc)))
            return None
        if problem:
            self._refuse_acl(problem)
        return problem

    def _refuse_acl(self, problem: str) -> None:
        if self._acl_refused is None:
            self._acl_refused = problem
            log.warning(
                "OUTPUT_URL_MODE=public but %s %s, so results are uploaded without a public-read ACL and their "
                "URLs are readable only if a bucket policy or IAM binding makes output/ public (see docs/kiosk.md); "
                "grant that, allow object ACLs, or set OUTPUT_URL_MODE=signed", self.url, problem)

    def _acl_problem(self) -> str | None:
        """Backends: why the bucket will refuse object ACLs (None when it accepts them)."""
        return None

    def url_for(self, key: str) -> str:
        """What a job's `output_url` holds for `key`, per OUTPUT_URL_MODE (signed, public or key)."""
        mode = self.settings.OUTPUT_URL_MODE
        if mode == "key":
            return self._confine(key)
        if mode == "public":
            return self.public_url(key)
        return self.signed_url(key)

    #: An object name no job uses: `warm` asks about it once (a miss is the expected answer).
    WARM_NAME = ".redis-consumer-warm-up"

    def warm(self) -> None:
        """One cheap read before the first job, its answer ignored; never raises.

        It opens what the first transfer would otherwise wait for: the connection (and TLS
        handshake), credentials from a metadata or token endpoint, the server's own first-request
        work (moto's is ~40 ms). The worker's warm-up runs it in a thread of its own, so the wait
        overlaps the imports. No retry loop: the first job asks again and reports what fails.
        """
        try:
            self._warm(full_key(self.prefix, self.WARM_NAME))
        except Exception as exc:  # noqa: BLE001 - e.g. a 403 or 404: the connection is open all the same
            log.debug("storage warm-up request to %s: %s", self.url, type(exc).__name__)

    def _warm(self, name: str) -> None:
        """One request about the object `name` (backends over a network); a folder has nothing to open."""

    # ---- backend primitives (object names already include the prefix) ----

    @abstractmethod
    def _stat(self, name: str) -> int | None:
        """Size of the object, None when it is missing."""

    @abstractmethod
    def _get(self, name: str, dest_path: str, size: int) -> None:
        """Stream the object into `dest_path` (which exists and may be overwritten); `size` is what
        `_stat` answered just before (a backend may pick its transfer by it, and skip asking again)."""

    def _link(self, name: str, dest_path: str) -> bool:
        """Put the object at `dest_path` without copying its bytes, for reading only; False when
        this backend (or this pair of paths) cannot, and `_get` copies instead."""
        return False

    @abstractmethod
    def _put(self, path: str, name: str) -> None:
        """Stream a local file into the object, replacing any previous version."""

    def _move(self, path: str, name: str) -> bool:
        """Make the local file `path` the object by moving it (no copy); False when this backend
        (or this pair of paths) cannot, and `_put` copies instead."""
        return False

    @abstractmethod
    def _remove(self, name: str) -> None:
        """Delete the object; a missing one is fine."""

    @abstractmethod
    def _sign(self, name: str, ttl: int) -> str:
        """A time-limited URL for the object."""

    @abstractmethod
    def _public(self, name: str) -> str:
        """The plain URL of the object."""

    @abstractmethod
    def _classify(self, exc: BaseException) -> str | None:
        """TRANSIENT, MISSING, DENIED, NO_BUCKET, PERMANENT, or None for a bug (re-raised)."""

    def _describe(self, exc: BaseException) -> str:
        """A short, credential-free description of a backend failure for messages and logs."""
        return type(exc).__name__

    def _credentials_problem(self, exc: BaseException) -> bool:
        """Whether a DENIED failure is about our credentials (a user-facing refusal, as for reads)
        rather than about write permission on the bucket (an operator problem)."""
        return False

    # ---- shared policy ----

    def _confine(self, key: str) -> str:
        return confine(key, self.scheme, self.bucket, self.prefix)

    def _check_size(self, rel: str, size: int) -> None:
        limit = self.settings.MAX_INPUT_BYTES
        if size > limit:
            raise UserError(
                f"The file '{rel}' is {size} bytes, larger than the {limit}-byte limit (MAX_INPUT_BYTES); "
                "upload a smaller file."
            )

    def _missing(self, rel: str) -> UserError:
        return UserError(f"The file '{rel}' does not exist in {self.url}; check the key or upload it again.")

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _give_up_at(self, deadline: float | None) -> float:
        """Monotonic time after which retries stop: STORAGE_RETRY_TIMEOUT, or the job's deadline if sooner."""
        budget = self.settings.STORAGE_RETRY_TIMEOUT
        if deadline is not None:
            budget = min(budget, max(deadline, 0.0))
        return time.monotonic() + budget

    def _call(self, action: str, rel: str, fn: Callable[[], T], give_up_at: float | None = None) -> T:
        """Run `fn`, retrying transient failures with capped full-jitter backoff until `give_up_at`."""
        if give_up_at is None:
            give_up_at = self._give_up_at(None)
        cap = self.settings.RETRY_BACKOFF_CAP
        attempt = 0
        while True:
            try:
                return fn()
            except UserError:
                raise
            except Exception as exc:
                if any(isinstance(err, NoBucket) for err in exception_chain(exc)):
                    kind: str | None = NO_BUCKET
                else:
                    kind = self._classify(exc)
                if action == "downloading":
                    scratch = next((e for e in exception_chain(exc)
                                    if isinstance(e, OSError) and e.errno in _SCRATCH_ERRNOS), None)
                    if scratch is not None:
                        raise TransientError(
                            f"The worker's scratch directory could not hold '{rel}' ({_SCRATCH_ERRNOS[scratch.errno]}); "
                            "ask the operator to give workers more temporary space (TMPDIR)."
                        ) from None
                if kind == DENIED and action in WRITE_ACTIONS and not self._credentials_problem(exc):
                    kind = WRITE_DENIED
                if kind is None:
                    raise
                what = self._clean(self._describe(exc))
                if kind == FULL:
                    raise TransientError(
                        f"Storage {self.url} is full ({what}) so '{rel}' could not be written; the job will be "
                        "retried: ask the operator to free space or raise the bucket's quota."
                    ) from None
                if kind == READ_ONLY:
                    raise StorageWriteError(
                        f"Storage {self.url} is read-only ({what}) so '{rel}' could not be written; "
                        "ask the operator to make it writable for the workers."
                    ) from None
                if kind == WRITE_DENIED:
                    raise StorageWriteError(
                        f"Storage {self.url} refused {action} '{rel}' ({what}); ask the operator to give the "
                        "workers write permission there."
                    ) from None
                if kind == MISSING:
                    raise self._missing(rel) from None
                if kind == NO_BUCKET:
                    raise StorageAccessError(
                        f"The bucket of {self.url} does not exist, so '{rel}' could not be read or written; "
                        "ask the operator to fix STORAGE_BUCKET."
                    ) from None
                if kind == DENIED:
                    raise StorageAccessError(
                        f"Storage denied access while {action} '{rel}' ({what}); "
                        "ask the operator to check the worker's bucket permissions."
                    ) from None
                if kind == PERMANENT:
                    raise StorageAccessError(f"Storage refused {action} '{rel}' ({what}).") from None
                delay = full_jitter(attempt, BACKOFF_BASE, cap)
                if time.monotonic() + delay > give_up_at:
                    raise TransientError(
                        f"Storage stayed unavailable while {action} '{rel}' after {attempt + 1} attempts ({what})."
                    ) from None
                attempt += 1
                log.warning("storage %s %r failed (%s); retry %d in %.2fs", action, rel, what, attempt, delay)
                time.sleep(delay)


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception and whatever it wraps (SDKs wrap the real error, e.g. s3transfer's `last_exception`)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
