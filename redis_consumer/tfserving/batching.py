"""Pipelined batching: keep PIPELINE_DEPTH Predict calls in flight so the GPU never waits.

A batch that is the only one left (a one-request image, the common case) is called blocking.

Samples are cut into batches of the server's max batch size (TF_MAX_BATCH_SIZE until the server
says otherwise); while one batch runs the next is already framed and queued. Replies are copied
once into a preallocated output array. A refused batch ("Task size N is larger than maximum input
batch size M") is split and M is remembered for the model.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from ..errors import UserError, one_sentence, quote
from . import messages
from .calls import PREDICT, BatchTooLarge, Caller, observe, status


class _Answered:
    """A call made blocking, in the future's shape: `result()` returns its reply or raises its
    error (what the loop below does with either does not depend on how the call was made)."""

    def __init__(self, reply: bytes | None = None, error: grpc.RpcError | None = None) -> None:
        self.reply, self.error = reply, error

    def result(self) -> bytes:
        if self.error is not None:
            raise self.error
        return self.reply  # type: ignore[return-value]

    def cancel(self) -> bool:
        return False


@dataclass
class _InFlight:
    lo: int
    hi: int
    attempt: int
    future: Any
    started: float
    timeout: float


class _Outputs:
    """Collects per-batch replies into preallocated arrays (or pieces, for non-batched outputs)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.arrays: dict[str, np.ndarray] = {}
        self.filled: dict[str, list[tuple[int, int]]] = {}
        self.pieces: dict[str, list[tuple[int, np.ndarray]]] = {}

    def add(self, lo: int, hi: int, outputs: dict[str, np.ndarray]) -> None:
        for name, value in outputs.items():
            if name not in self.pieces and value.ndim >= 1 and value.shape[0] == hi - lo:
                out = self.arrays.get(name)
                if out is None:
                    out = self.arrays[name] = np.empty((self.total,) + value.shape[1:], dtype=value.dtype)
                if out.shape[1:] == value.shape[1:] and out.dtype == value.dtype:
                    out[lo:hi] = value
                    self.filled.setdefault(name, []).append((lo, hi))
                    continue
            if name in self.arrays:  # shapes differ between batches: keep every batch as it came
                out = self.arrays.pop(name)
                self.pieces[name] = [(a, out[a:b]) for a, b in self.filled.pop(name, [])]
            self.pieces.setdefault(name, []).append((lo, value))

    def result(self) -> dict[str, np.ndarray]:
        out = dict(self.arrays)
        for name, parts in self.pieces.items():
            parts.sort(key=lambda p: p[0])
            values = [np.array(v) for _, v in parts]
            try:
                out[name] = values[0] if len(values) == 1 else np.concatenate([np.atleast_1d(v) for v in values])
            except ValueError:
                raise UserError(one_sentence(
                    f"model output {quote(name)} changes shape between batches ({[v.shape for v in values]}), "
                    "so it cannot be predicted in batches")) from None
        return out


def _sample_count(model: str, arrays: dict[str, np.ndarray]) -> int | None:
    counts = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if len(counts) != 1:
        raise UserError(one_sentence(
            f"inputs for model {quote(model)} disagree on the number of samples: "
            f"{ {k: a.shape for k, a in arrays.items()} }"))
    return counts.pop()


def run_batches(client: Caller, model: str, version: Any, arrays: dict[str, np.ndarray],
                deadline_at: float | None) -> dict[str, np.ndarray]:
    """Predict every sample of `arrays`; returns full-size outputs keyed by output name."""
    total = _sample_count(model, arrays)
    if total is None or total == 0:  # scalars or empty batch: one plain call
        reply = client.call(PREDICT, messages.frame_predict_request(model, version, arrays),
                            model=model, version=version, deadline_at=deadline_at)
        return {k: np.array(v) for k, v in messages.parse_predict_response(reply)[0].items()}
    arrays = {k: a if a.flags.c_contiguous else np.ascontiguousarray(a) for k, a in arrays.items()}
    results = _Outputs(total)
    stream_batches(client, model, version, total, lambda lo, hi: {k: a[lo:hi] for k, a in arrays.items()},
                   results.add, deadline_at)
    return results.result()


def stream_batches(client: Caller, model: str, version: Any, total: int,
                   source: Callable[[int, int], Mapping[str, np.ndarray]],
                   sink: Callable[[int, int, dict[str, np.ndarray]], None], deadline_at: float | None,
                   output_filter: Sequence[str] = ()) -> None:
    """Predict samples [0, total): `source(lo, hi)` makes a batch's inputs (a dict of arrays, a
    filled `messages.RequestWriter`, or a complete request's bytes) just before it is sent,
    `sink(lo, hi, outputs)` takes its outputs (read-only views) as soon as they arrive.

    Making and consuming batches overlaps with the server's work on the batches in flight, so a
    tiler that cuts and stitches here keeps the GPU busy. `output_filter`: the outputs to ask
    for (PredictRequest.output_filter; empty: all) in the requests framed here.
    """
    depth = max(1, int(client.settings.PIPELINE_DEPTH))
    predict = client._callable(PREDICT)
    todo: deque[tuple[int, int, int]] = deque()  # (lo, hi, attempt) waiting to be (re)sent
    pending: deque[_InFlight] = deque()
    cursor = 0
    waited: dict[tuple[int, int], float] = {}  # batch -> deadline of its last unanswered attempt
    began = time.monotonic()  # a server that went down after this may have been crashed by our data

    def submit(lo: int, hi: int, attempt: int, alone: bool) -> None:
        """Send one batch; `alone`: nothing else is in flight or left to send, so the call is
        made blocking: the reply is then read on this thread, not handed over from grpcio's
        channel thread (4-5 % less client CPU for a one-request image: A/B in one process, 4 rounds)."""
        timeout = client.timeout_for(deadline_at, waited.get((lo, hi)), model)
        made = source(lo, hi)
        if isinstance(made, messages.RequestWriter):  # filled in place by the caller
            request = made.finish()
        elif type(made) is bytes:  # a complete request the caller framed (and keeps for retries)
            request = made
        else:
            request = messages.frame_predict_request(model, version, made, output_filter=output_filter)
        started = time.monotonic()
        if alone:
            try:
                call: Any = _Answered(predict(request, timeout=timeout))
            except grpc.RpcError as exc:
                call = _Answered(error=exc)
        else:
            call = predict.future(request, timeout=timeout)
        pending.append(_InFlight(lo, hi, attempt, call, started, timeout))

    try:
        while cursor < total or todo or pending:
            while len(pending) < depth and (todo or cursor < total):
                if todo:
                    lo, hi, attempt = todo.popleft()
                    submit(lo, hi, attempt, not pending and not todo and cursor >= total)
                else:
                    hi = min(total, cursor + client.batch_size(model))
                    submit(cursor, hi, 0, not pending and not todo and hi >= total)
                    cursor = hi
            item = pending.popleft()
            try:
                reply = item.future.result()
            except grpc.RpcError as exc:
                try:
                    client.failed(exc, PREDICT, item.started, item.attempt, deadline_at, model, version, item.timeout,
                                  began)
                except BatchTooLarge as too_large:
                    _split(client, model, item, too_large.limit, todo)
                    continue
                if status(exc)[0] == grpc.StatusCode.DEADLINE_EXCEEDED:
                    waited[(item.lo, item.hi)] = item.timeout
                todo.appendleft((item.lo, item.hi, item.attempt + 1))
                continue
            observe(PREDICT, "OK", time.monotonic() - item.started)
            outputs, _ = messages.parse_predict_response(reply)
            sink(item.lo, item.hi, outputs)
    finally:
        for item in pending:
            item.future.cancel()


def _split(client: Caller, model: str, item: _InFlight, limit: int, todo: deque) -> None:
    size = item.hi - item.lo
    if limit < 1 or limit >= size:
        raise UserError(one_sentence(
            f"model {quote(model)} refused a batch of {size} although its limit is {limit}"))
    client.max_batch[model] = limit
    chunks = [(lo, min(lo + limit, item.hi), item.attempt) for lo in range(item.lo, item.hi, limit)]
    for chunk in reversed(chunks):
        todo.appendleft(chunk)
