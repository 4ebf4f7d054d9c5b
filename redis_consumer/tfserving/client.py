"""Lean TensorFlow Serving gRPC client: one channel per target per process, no TensorFlow.

Calls go through `channel.unary_unary(path)` with no (de)serializer, so requests are bytes framed
by `messages` and replies are parsed into numpy views. Deadlines and retries live in `calls`
(every call, metadata included, gets min(GRPC_TIMEOUT, time left)); pipelined batches in
`batching`. Metrics hook in through CALL_OBSERVERS.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from ..errors import UserError, one_sentence, quote
from . import messages
from .batching import run_batches, stream_batches
from .calls import (  # noqa: F401  (re-exported: the client's public names before calls.py existed)
    CALL_OBSERVERS,
    GET_MODEL_METADATA,
    GET_MODEL_STATUS,
    PREDICT,
    RETRYABLE,
    BatchTooLarge,
    Caller,
    _batch_limit,
    check_model,
    observe,
    status,
)
from .messages import ModelMetadata, TensorSpec  # noqa: F401  (re-exported: part of the API)

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),  # we retry ourselves, bounded by the job's deadline
    # reconnect soon after a server comes back (gRPC's default backoff grows to 120 s, which would
    # keep a worker waiting minutes after a scaled-from-zero TF Serving is up)
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)

#: Answers of `probe`: the server serves the model / cannot be reached / is loading it.
UP, DOWN, LOADING = "up", "down", "loading"


class TFServingClient(Caller):
    """Talks to one TF Serving target (TF_HOST:TF_PORT); safe to share within a process.

    Deadlines, retries and error mapping of each call come from `calls.Caller`."""

    def __init__(self, settings: Any, redis_client: Any = None) -> None:
        self.settings = settings
        self.redis = redis_client
        self.target = f"{settings.TF_HOST}:{settings.TF_PORT}"
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._pid = 0
        self._callables: dict[str, Any] = {}
        self._metadata: dict[tuple[str, str], tuple[float, ModelMetadata]] = {}
        self.max_batch: dict[str, int] = {}
        self._state: grpc.ChannelConnectivity | None = None  # the channel's last connectivity state
        self._left_ready_at: float | None = None  # monotonic time it last stopped being READY

    # ----- channel -----
    def channel(self) -> grpc.Channel:
        """The channel, created on first use and again in a forked child."""
        pid = os.getpid()
        if self._channel is None or self._pid != pid:
            with self._lock:
                if self._channel is None or self._pid != pid:
                    # after fork the parent's channel is unusable: drop it, never close it here
                    self._channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
                    self._callables = {}
                    self._pid = pid
                    self._state = self._left_ready_at = None
                    self._channel.subscribe(self._on_state, try_to_connect=False)
        return self._channel

    def _callable(self, method: str):
        channel = self.channel()
        fn = self._callables.get(method)
        if fn is None:
            fn = self._callables[method] = channel.unary_unary(method)  # bytes in, bytes out
        return fn

    def pause_watch(self) -> None:
        """Before a fork: stop gRPC's connectivity-polling thread (a fork while it is inside gRPC
        skips gRPC's fork handlers and can hang the child's first call); it exits within 0.2 s."""
        channel = self._channel
        if channel is None or self._pid != os.getpid():
            return
        channel.unsubscribe(self._on_state)
        state = getattr(channel, "_connectivity_state", None)  # grpc's own poller flag, if present
        deadline = time.monotonic() + 0.5
        while getattr(state, "polling", False) and time.monotonic() < deadline:
            time.sleep(0.01)

    def resume_watch(self) -> None:
        """After a fork, in the parent: watch the channel's connectivity again."""
        channel = self._channel
        if channel is not None and self._pid == os.getpid():
            channel.subscribe(self._on_state, try_to_connect=False)

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        if self._state == grpc.ChannelConnectivity.READY and state != grpc.ChannelConnectivity.READY:
            self._left_ready_at = time.monotonic()
        self._state = state

    def close(self) -> None:
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.unsubscribe(self._on_state)
                self._channel.close()
            self._channel = None
            self._callables = {}

    def ready(self, timeout: float = 1.0) -> bool:
        """True when the server accepts a connection within `timeout` seconds (for /readyz)."""
        try:
            grpc.channel_ready_future(self.channel()).result(timeout=timeout)
            return True
        except grpc.FutureTimeoutError:
            return False

    def down_since_before(self, began: float) -> bool:
        """Whether the channel is not connected now and stopped being READY before `began` (or
        never was): from gRPC's connectivity callbacks, without waiting, since `calls` asks when
        UNAVAILABLE retries ran out, maybe with milliseconds of the job's time left."""
        if self._state == grpc.ChannelConnectivity.READY:
            return False
        return self._left_ready_at is None or self._left_ready_at <= began

    def probe(self, model: str, version: int | str | None = None, timeout: float = 2.0) -> tuple[str, str]:
        """One cheap health probe for a waiting worker: GetModelMetadata, no retries, waiting up to
        `timeout` s for the channel to connect. (UP, "") when the server answers anything but
        UNAVAILABLE/DEADLINE_EXCEEDED (a wrong model name then fails its jobs as usual), (DOWN,
        why) when it cannot be reached, (LOADING, why) when it is up but still loading the model."""
        request = messages.metadata_request_bytes(model, version)
        start = time.monotonic()
        try:
            self._callable(GET_MODEL_METADATA)(request, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            code = status(exc)[0]
            observe(GET_MODEL_METADATA, code.name, time.monotonic() - start)
            if code in RETRYABLE:
                return DOWN, one_sentence(f"TensorFlow Serving at {self.target} is unreachable ({code.name})")
            if code == grpc.StatusCode.NOT_FOUND and self.loading(model, version, timeout):
                return LOADING, one_sentence(f"TensorFlow Serving at {self.target} is still loading model "
                                             f"{quote(model)} version {version}")
            return UP, ""
        observe(GET_MODEL_METADATA, "OK", time.monotonic() - start)
        return UP, ""

    def loading(self, model: str, version: int | str | None = None, timeout: float = 2.0) -> bool:
        """Whether GetModelStatus says the model (that version, or any when None) is still coming
        up (START/LOADING) and none is AVAILABLE: a rollout, not a wrong name."""
        try:
            states = {s["state"] for s in self.model_status(model, version, timeout)}
        except Exception:  # noqa: BLE001 - unknown model, no ModelService, unreachable: not loading
            return False
        return bool(states & {"START", "LOADING"}) and "AVAILABLE" not in states

    # ----- metadata -----
    def get_metadata(self, model: str, version: int | str | None = None, *,
                     deadline: float | None = None) -> ModelMetadata:
        """Inputs/outputs of a served model, cached in-process and in Redis `{model}:{version}`
        (field `metadata` in the kiosk's format, `metadata_rc` with inputs and outputs)."""
        check_model(model, version)
        ttl = float(self.settings.METADATA_EXPIRE_TIME)
        key = (model, "" if version is None else str(version))
        now = time.monotonic()
        hit = self._metadata.get(key)
        if hit and hit[0] > now:
            return hit[1]
        meta = self._metadata_from_redis(model, version)
        if meta is None:
            deadline_at = None if deadline is None else now + deadline
            reply = self.call(GET_MODEL_METADATA, messages.metadata_request_bytes(model, version),
                              model=model, version=version, deadline_at=deadline_at)
            meta = messages.parse_metadata_response(reply, model, version)
            if not meta.inputs:
                raise UserError(one_sentence(
                    f"model {quote(model)} version {version} has no serving signature TF Serving can describe"))
            self._metadata_to_redis(model, version, meta)
        self._metadata[key] = (now + ttl, meta)
        return meta

    def _redis_key(self, model: str, version: Any) -> str:
        return f"{model}:{'latest' if version in (None, '') else version}"

    def _metadata_from_redis(self, model: str, version: Any) -> ModelMetadata | None:
        if self.redis is None:
            return None
        try:
            raw = self.redis.hget(self._redis_key(model, version), "metadata_rc")
            return ModelMetadata.from_json(raw) if raw else None
        except Exception:  # cache only: a Redis hiccup or stale format falls through to gRPC
            log.debug("metadata cache read failed", exc_info=True)
            return None

    def _metadata_to_redis(self, model: str, version: Any, meta: ModelMetadata) -> None:
        if self.redis is None:
            return
        try:
            key = self._redis_key(model, version)
            pipe = self.redis.pipeline(transaction=False)
            # `metadata` keeps the kiosk's shape (its consumers may share this Redis); ours is fuller
            pipe.hset(key, mapping={"metadata": meta.to_kiosk_json(), "metadata_rc": meta.to_json()})
            pipe.expire(key, int(self.settings.METADATA_EXPIRE_TIME))
            pipe.execute()
        except Exception:
            log.debug("metadata cache write failed", exc_info=True)

    def model_status(self, model: str, version: int | str | None = None, timeout: float = 5.0) -> list[dict]:
        """GetModelStatus: [{version, state, error_message}] (for `doctor`-style checks)."""
        from .protos import rcserving_pb2 as pb

        reply = self.call(GET_MODEL_STATUS, messages.model_spec_request(model, version), model=model,
                          version=version, deadline_at=time.monotonic() + timeout)
        resp = pb.GetModelStatusResponse.FromString(reply)
        return [{"version": s.version, "state": pb.ModelVersionStatus.State.Name(s.state),
                 "error_message": s.status.error_message} for s in resp.model_version_status]

    # ----- predict -----
    def batch_size(self, model: str) -> int:
        return self.max_batch.get(model, int(self.settings.TF_MAX_BATCH_SIZE))

    def predict(self, model: str, version: int | str | None, inputs: np.ndarray | Mapping[str, np.ndarray],
                *, deadline: float | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Predict any number of samples: batched to the server's limit, PIPELINE_DEPTH in flight.

        A plain array goes to the model's only input; with one output a plain array comes back.
        `deadline` is the number of seconds left for the job.
        """
        check_model(model, version)
        deadline_at = None if deadline is None else time.monotonic() + deadline
        plain = not isinstance(inputs, Mapping)
        if plain:
            meta = self.get_metadata(model, version, deadline=deadline)
            if len(meta.inputs) != 1:
                raise UserError(one_sentence(
                    f"model {quote(model)} version {version} takes inputs {sorted(meta.inputs)}; "
                    "pass a dict naming each one"))
            (name, spec), = meta.inputs.items()
            array = np.asarray(inputs)
            if spec.dtype.kind in "biuf" and array.dtype.kind in "biuf" and array.dtype != spec.dtype:
                array = array.astype(spec.dtype)  # e.g. float64 pixels for a float32 model
            arrays = {name: array}
        else:
            arrays = {k: np.asarray(v) for k, v in inputs.items()}
        outputs = run_batches(self, model, version, arrays, deadline_at)
        if plain and len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs

    def one_request(self, model: str, version: int | str | None, input_name: str, dtype: Any,
                    shape: tuple[int, ...], output_filter: Sequence[str] = ()) -> messages.RequestWriter | None:
        """A PredictRequest laid out for `shape` samples of one input, to be filled in place and
        sent with `predict_stream` (its source returning `finish()`'s bytes), or None when that
        many samples would not go as one request (more than the batch size)."""
        if not shape or not 0 < shape[0] <= self.batch_size(model):
            return None
        return messages.RequestWriter(model, version, {input_name: (dtype, tuple(shape))},
                                      output_filter=output_filter)

    def predict_stream(self, model: str, version: int | str | None, total: int, source: Callable,
                       sink: Callable, *, deadline: float | None = None, output_filter: Sequence[str] = ()) -> None:
        """Pipelined predict of `total` samples made on demand by `source(lo, hi) -> inputs` and
        handed to `sink(lo, hi, outputs)` as they arrive (see `batching.stream_batches`);
        `output_filter` names the outputs to return (empty: all)."""
        check_model(model, version)
        deadline_at = None if deadline is None else time.monotonic() + deadline
        stream_batches(self, model, version, total, source, sink, deadline_at, output_filter)


_CLIENTS: dict[tuple[str, int], TFServingClient] = {}
_CLIENTS_LOCK = threading.Lock()


def _before_fork() -> None:
    for client in list(_CLIENTS.values()):
        client.pause_watch()


def _after_fork_in_parent() -> None:
    for client in list(_CLIENTS.values()):
        client.resume_watch()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent)


def get_client(settings: Any, redis_client: Any = None) -> TFServingClient:
    """The process-wide client for (TF_HOST, TF_PORT); the channel itself is made on first use."""
    key = (settings.TF_HOST, int(settings.TF_PORT))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = TFServingClient(settings, redis_client)
        else:
            client.settings = settings
            if redis_client is not None:
                client.redis = redis_client
        return client
