"""One gRPC call to TF Serving: its deadline, its retries and what its failure means for the job.

Both the client (unary calls, metadata) and the pipelined batcher use this module, so neither
imports the other. Every attempt's deadline is min(GRPC_TIMEOUT, time left for the job); retries
(UNAVAILABLE, DEADLINE_EXCEEDED) use capped exponential backoff with full jitter, bounded by
MAX_RETRY and the job's deadline. A server that accepts the connection but never answers ends as
"TensorFlow Serving at HOST:PORT did not answer within N s", not as a stuck worker.
UNAVAILABLE retries that run out while the channel is down and was already down when the call
(or pipelined stream) began raise `ServingUnavailable` (server down or scaling from zero: the
worker waits for it) rather than a counted system error. An UNAVAILABLE from a connected server
(overloaded, failing) stays a `TransientError`, and so does a server that went down during the
call: the job may have crashed it, so its attempt counts and a poison input ends dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from ..errors import (
    JobTimeout,
    ServingUnavailable,
    TransientError,
    UserError,
    one_sentence,
    quote,
)
from ..utils.backoff import full_jitter

log = logging.getLogger(__name__)

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS = "/tensorflow.serving.ModelService/GetModelStatus"

#: Callbacks `fn(method: str, code: str, seconds: float)` run after every gRPC attempt
#: (method is the short name, e.g. "Predict"; code e.g. "OK", "UNAVAILABLE"). Metrics register here.
CALL_OBSERVERS: list[Callable[[str, str, float], None]] = []

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

#: Longest model name / version label sent to TF Serving (model names are directory names).
MAX_MODEL_NAME = 255
MAX_MODEL_VERSION = 64


def reserve(left: float) -> float:
    """Seconds of the job's time kept back from a call (up to 0.5 s, 10%) so that a call cut by
    the job's deadline still has time to say why before the worker's own JOB_TIMEOUT fires."""
    return min(0.5, 0.1 * max(left, 0.0))


def check_model(model: str, version: Any = None) -> None:
    """A user error for a model name or version no server can have (e.g. a 10 MB `model_name`)."""
    if len(model) > MAX_MODEL_NAME:
        raise UserError(f"The job's model name is too long ({len(model)} characters, at most {MAX_MODEL_NAME}): "
                        f"{quote(model, 40)}.")
    if version is not None and len(str(version)) > MAX_MODEL_VERSION:
        raise UserError(f"The job's model version is too long ({len(str(version))} characters, at most "
                        f"{MAX_MODEL_VERSION}): {quote(str(version), 40)}.")


class BatchTooLarge(Exception):
    """The server refused a batch: 'Task size N is larger than maximum input batch size M'."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def observe(method: str, code: str, seconds: float) -> None:
    short = method.rsplit("/", 1)[-1]
    for fn in CALL_OBSERVERS:
        try:
            fn(short, code, seconds)
        except Exception:  # a broken metrics hook must never fail a job
            log.debug("gRPC call observer failed", exc_info=True)


def _batch_limit(details: str) -> int | None:
    marker = "larger than maximum input batch size"
    if marker not in details:
        return None
    tail = details.split(marker, 1)[1].strip().split()
    try:
        return int(tail[0].rstrip(".,;")) if tail else None
    except ValueError:
        return None


def status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """(code, details) of a failed call; a bare RpcError (no status) counts as UNKNOWN."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    return code, details


class Caller:
    """Deadlines, retries and error mapping of calls to one TF Serving target.

    Subclasses provide `_callable(method)` (a bytes-in, bytes-out unary callable).
    """

    settings: Any
    target: str
    max_batch: dict[str, int]

    def _callable(self, method: str) -> Any:  # pragma: no cover - provided by the client
        raise NotImplementedError

    def down_since_before(self, began: float) -> bool:
        """Whether the channel is down now and has been since before `began` (monotonic), i.e.
        this call never had a server to talk to (the client asks gRPC; unknown counts as no)."""
        return False

    def loading(self, model: str, version: Any = None, timeout: float = 2.0) -> bool:
        """Whether the server is still loading the model (the client asks GetModelStatus)."""
        return False

    def unreachable(self, code: grpc.StatusCode, model: str, version: Any, began: float | None) -> None:
        """Raise `ServingUnavailable` when an UNAVAILABLE call that began at `began` gave up and
        the channel has been down all along."""
        if code == grpc.StatusCode.UNAVAILABLE and began is not None and self.down_since_before(began):
            raise ServingUnavailable(one_sentence(
                f"TensorFlow Serving at {self.target} is unreachable (UNAVAILABLE) for model {quote(model)}"),
                model=model, version=version, target=self.target)

    def batch_size(self, model: str) -> int:
        return self.max_batch.get(model, int(self.settings.TF_MAX_BATCH_SIZE))

    def no_answer(self, seconds: float, model: str) -> str:
        """The reason of a job whose model server stopped answering."""
        return one_sentence(f"TensorFlow Serving at {self.target} did not answer within {seconds:.3g} s "
                            f"(model {quote(model)}).")

    def timeout_for(self, deadline_at: float | None, waited: float | None = None, model: str = "") -> float:
        """Per-call deadline: min(GRPC_TIMEOUT, seconds left for the job less a small `reserve`).

        `waited`: the previous attempt's deadline when it expired unanswered, so running out of
        time then says the server did not answer.
        """
        timeout = float(self.settings.GRPC_TIMEOUT)
        if deadline_at is not None:
            left = deadline_at - time.monotonic()
            left -= reserve(left)
            if left <= 0:
                if waited is not None:
                    raise JobTimeout(self.no_answer(waited, model))
                raise JobTimeout("the job ran out of time while waiting for TensorFlow Serving")
            timeout = min(timeout, left)
        return timeout

    def classify(self, code: grpc.StatusCode, details: str, model: str, version: Any) -> None:
        """Raise the right error for a failed call; return only when it is worth retrying."""
        what = f"model {quote(model)} version {version if version not in (None, '') else 'latest'}"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            limit = _batch_limit(details)
            if limit is not None:
                raise BatchTooLarge(limit)
            raise UserError(one_sentence(f"TensorFlow Serving rejected the input for {what}: {details}"))
        if code == grpc.StatusCode.NOT_FOUND or (
                code == grpc.StatusCode.FAILED_PRECONDITION and "not found" in details.lower()):
            raise UserError(one_sentence(f"{what} is not served by TensorFlow Serving: {details}"))
        if code in RETRYABLE:
            return
        raise TransientError(one_sentence(f"TensorFlow Serving failed for {what}: {code.name} {details}"))

    def backoff_or_raise(self, code: grpc.StatusCode, details: str, attempt: int, deadline_at: float | None,
                         model: str, waited: float | None = None, version: Any = None,
                         began: float | None = None) -> None:
        """Sleep before retry `attempt` + 1, or raise when retries or time are used up."""
        unanswered = code == grpc.StatusCode.DEADLINE_EXCEEDED and waited is not None
        if attempt >= self.settings.MAX_RETRY:
            self.unreachable(code, model, version, began)
            if unanswered:
                raise TransientError(self.no_answer(waited, model))
            raise TransientError(one_sentence(
                f"TensorFlow Serving at {self.target} still {code.name} after {attempt} retries "
                f"for model {quote(model)}: {details}"))
        delay = full_jitter(attempt, self.settings.GRPC_BACKOFF, self.settings.RETRY_BACKOFF_CAP)
        if deadline_at is not None and time.monotonic() + delay >= deadline_at - reserve(deadline_at - time.monotonic()):
            self.unreachable(code, model, version, began)
            if unanswered:
                raise JobTimeout(self.no_answer(waited, model))
            raise JobTimeout(one_sentence(
                f"the job ran out of time retrying TensorFlow Serving ({code.name}) for model {quote(model)}"))
        log.info("TF Serving %s for %s, retry %d in %.2fs", code.name, quote(model), attempt + 1, delay)
        time.sleep(delay)

    def failed(self, exc: grpc.RpcError, method: str, started: float, attempt: int,
               deadline_at: float | None, model: str, version: Any, timeout: float | None = None,
               began: float | None = None) -> None:
        """After a failed attempt: record it, raise its error (BatchTooLarge for a refused batch),
        or sleep and return when attempt + 1 is worth making. `timeout`: that attempt's deadline;
        `began`: when the call (or stream) made its first attempt."""
        code, details = status(exc)
        observe(method, code.name, time.monotonic() - started)
        if code == grpc.StatusCode.NOT_FOUND and method != GET_MODEL_STATUS:
            # a rollout still loading the model is waited for; a name no version answers to fails
            left = 2.0 if deadline_at is None else max(0.0, min(2.0, (deadline_at - time.monotonic()) / 2))
            if left > 0 and self.loading(model, version, left):
                raise ServingUnavailable(one_sentence(
                    f"TensorFlow Serving at {self.target} is still loading model {quote(model)} version {version}"),
                    model=model, version=version, target=self.target)
        self.classify(code, details, model, version)
        self.backoff_or_raise(code, details, attempt, deadline_at, model, waited=timeout, version=version,
                              began=began)
        self.retries = getattr(self, "retries", 0) + 1  # read per job as `predict_retries`

    def call(self, method: str, request: bytes, *, model: str, version: Any,
             deadline_at: float | None = None) -> bytes:
        """One unary call with retries; returns the reply bytes."""
        check_model(model, version)
        attempt = 0
        waited: float | None = None
        began = time.monotonic()
        while True:
            timeout = self.timeout_for(deadline_at, waited, model)
            start = time.monotonic()
            try:
                reply = self._callable(method)(request, timeout=timeout)
            except grpc.RpcError as exc:
                self.failed(exc, method, start, attempt, deadline_at, model, version, timeout, began)
                waited = timeout if status(exc)[0] == grpc.StatusCode.DEADLINE_EXCEEDED else None
                attempt += 1
                continue
            observe(method, "OK", time.monotonic() - start)
            return reply
