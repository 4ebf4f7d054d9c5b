"""Error types that decide a job's fate.

A `UserError` means the input is bad and retrying cannot help: the job fails at once with
`failure_type=user` and the message as its `reason`. A `TransientError` (and any other
unexpected exception) means infrastructure trouble: the job is retried, then failed with
`failure_type=system`.
"""

from __future__ import annotations


class RedisConsumerError(Exception):
    """Base of every error this package raises on purpose."""


class UserError(RedisConsumerError):
    """Bad input: the job fails immediately and the message becomes the user-facing reason.

    The message must be one sentence a user can act on (no traceback, no secrets).
    """


class TransientError(RedisConsumerError):
    """Infrastructure trouble that may pass (server unavailable, 5xx, timeouts): retried."""


class ServingUnavailable(TransientError):
    """The model server could not be reached at all (connection refused, no endpoint, channel
    down), as opposed to a server that answered with an error. Not the job's fault: the worker
    hands the job back to the queue head without counting the attempt and stops claiming until
    the server answers again (a GPU node scaling from zero takes minutes). Raised by
    `tfserving.calls`; defined here so the runner needs no gRPC import.
    """

    def __init__(self, message: str, *, model: str = "", version: object = None, target: str = "") -> None:
        super().__init__(message)
        self.model = model
        self.version = version
        self.target = target


class JobTimeout(BaseException):
    """The job ran past its deadline (`JOB_TIMEOUT`).

    A `BaseException` (like Dramatiq's interrupts): the worker raises it into the job's thread
    when the deadline passes, and a consumer's `except Exception:` must not swallow it. The
    worker retries the job (a system error) with this message as the reason.
    """

    def __init__(self, message: str = "The job did not finish within its time limit (JOB_TIMEOUT).") -> None:
        super().__init__(message)


class ClaimLost(RedisConsumerError):
    """Our claim on the job is gone: another worker took it over (we were presumed dead), or the
    job's hash vanished (deleted, expired, Redis wiped). Stop without writing anything more."""

    def __init__(self, key: str, vanished: bool = False) -> None:
        super().__init__(key)
        self.key = key
        self.vanished = vanished


class ConfigError(RedisConsumerError):
    """A setting is invalid; the process exits with code 2 and this one-line message."""


def quote(value: object, limit: int = 80) -> str:
    """A user's value as it goes into a message: quoted like repr, cut to about `limit` characters.

    Every job field quoted in a reason goes through here, so a 10 MB field costs nothing
    downstream (scrubbing, logging, Redis): the value is cut before anything else touches it.
    """
    if isinstance(value, (str, bytes)):
        cut = value[:limit]
        text = repr(cut)
        return text if len(cut) == len(value) else text[:-1] + "…" + text[-1]
    text = repr(value)[: limit + 1] if not isinstance(value, (list, tuple, dict, set)) else _short_repr(value, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_repr(value: object, limit: int) -> str:
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 8
    return r.repr(value)


def one_sentence(message: str, limit: int = 400) -> str:
    """Squash an error message into one line a user can read (no newlines, bounded length)."""
    text = str(message)
    if len(text) > 4 * limit:
        text = text[: 4 * limit]  # cut first: what follows is linear, but needs not see megabytes
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text
