"""Dev model server speaking TF Serving's gRPC API (Predict, GetModelMetadata, GetModelStatus).

It stands in for TensorFlow Serving in tests, benchmarks and the demo. Like TF Serving it replies
with the repeated `*_val` fields unless `response_encoding="content"`, refuses batches above
`max_batch_size` with TF Serving's own error text, and answers NOT_FOUND for unknown servables.
`fail_rate` injects UNAVAILABLE into Predict calls. A side method `/rcserving.DevServer/Stats`
returns JSON counters (busy seconds per model) so benchmarks can compute GPU utilisation.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterable
from concurrent import futures
from typing import Any

import grpc

from . import messages
from .models import Model, ModelInputError

log = logging.getLogger(__name__)

STATS = "/rcserving.DevServer/Stats"
_SERVER_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
                   ("grpc.so_reuseport", 0)]


class DevModelServer:
    """A gRPC server for `models`; `start()` binds and returns the port."""

    def __init__(self, models: Iterable[Model], *, host: str = "127.0.0.1", port: int = 8500,
                 max_batch_size: int = 0, fail_rate: float = 0.0, response_encoding: str = "fields",
                 workers: int = 8, seed: int | None = None) -> None:
        self.models: dict[str, dict[int, Model]] = {}
        for model in models:
            self.models.setdefault(model.name, {})[int(model.version)] = model
        self.host, self.port = host, port
        self.max_batch_size = int(max_batch_size or 0)
        self.fail_rate = float(fail_rate)
        if response_encoding not in ("fields", "content"):
            raise ValueError("response_encoding must be 'fields' or 'content'")
        self.form = response_encoding
        self.workers = workers
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counters = {"requests": 0, "injected_failures": 0, "rejected_batches": 0, "errors": 0}
        self.started = time.monotonic()
        self._server: grpc.Server | None = None

    # ----- lifecycle -----
    def start(self) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers), options=_SERVER_OPTIONS)
        handlers = [
            grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
                "Predict": grpc.unary_unary_rpc_method_handler(self.predict),
                "GetModelMetadata": grpc.unary_unary_rpc_method_handler(self.get_model_metadata),
            }),
            grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", {
                "GetModelStatus": grpc.unary_unary_rpc_method_handler(self.get_model_status),
            }),
            grpc.method_handlers_generic_handler("rcserving.DevServer", {
                "Stats": grpc.unary_unary_rpc_method_handler(self.stats),
            }),
        ]
        server.add_generic_rpc_handlers(handlers)
        port = server.add_insecure_port(f"{self.host}:{self.port}")
        if not port:
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        self.port = port
        server.start()
        self._server = server
        return port

    def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()

    # ----- helpers -----
    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def lookup(self, name: str, version: Any, context: grpc.ServicerContext) -> Model:
        versions = self.models.get(name, {})
        if version is None and versions:
            return versions[max(versions)]
        if isinstance(version, int) and version in versions:
            return versions[version]
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")
        raise AssertionError("unreachable")

    # ----- methods -----
    def predict(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._count("requests")
        try:
            req = messages.parse_predict_request(request)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot parse PredictRequest: {exc}")
        model = self.lookup(req.model, req.version, context)
        if self.fail_rate:
            with self._lock:
                fail = self._rng.random() < self.fail_rate
            if fail:
                self._count("injected_failures")
                context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure (--fail-rate)")
        first = next(iter(req.inputs.values()), None)
        batch = first.shape[0] if first is not None and first.ndim else 1
        if self.max_batch_size and batch > self.max_batch_size:
            self._count("rejected_batches")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Task size {batch} is larger than maximum input batch size {self.max_batch_size}")
        try:
            outputs = model.predict(req.inputs)
        except ModelInputError as exc:
            self._count("errors")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:  # a model bug: TF Serving would say INTERNAL
            self._count("errors")
            log.exception("model %s failed", model.name)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        if req.output_filter:
            outputs = {k: v for k, v in outputs.items() if k in req.output_filter}
        return messages.frame_predict_response(model.name, model.version, outputs, form=self.form,
                                               signature=req.signature or messages.DEFAULT_SIGNATURE)

    def get_model_metadata(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        from .protos import rcserving_pb2 as pb

        req = pb.GetModelMetadataRequest.FromString(request)
        if list(req.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "Metadata field signature_def is the only field supported")
        version = req.model_spec.version.value if req.model_spec.HasField("version") else None
        if req.model_spec.WhichOneof("version_choice") == "version_label":
            version = req.model_spec.version_label
        model = self.lookup(req.model_spec.name, version, context)
        return messages.build_metadata_response(model.metadata())

    def get_model_status(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        from .protos import rcserving_pb2 as pb

        req = pb.GetModelStatusRequest.FromString(request)
        version = req.model_spec.version.value if req.model_spec.HasField("version") else None
        versions = self.models.get(req.model_spec.name, {})
        chosen = sorted(versions) if version is None else ([version] if version in versions else [])
        if not chosen:
            self.lookup(req.model_spec.name, version, context)
        resp = pb.GetModelStatusResponse()
        for v in chosen:
            resp.model_version_status.add(version=v, state=pb.ModelVersionStatus.AVAILABLE)
        return resp.SerializeToString()

    def stats(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            data: dict[str, Any] = dict(self.counters)
        data["uptime"] = time.monotonic() - self.started
        data["models"] = {f"{name}:{v}": m.stats() for name, vs in self.models.items() for v, m in vs.items()}
        return json.dumps(data).encode()


def fetch_stats(target: str, timeout: float = 5.0) -> dict[str, Any]:
    """The dev server's counters (benchmarks and tests)."""
    with grpc.insecure_channel(target) as channel:
        return json.loads(channel.unary_unary(STATS)(b"", timeout=timeout))
