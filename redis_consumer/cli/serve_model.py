"""`redis-consumer serve-model`: the dev model server (TF Serving's gRPC API, numpy models)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve-model",
        help="run the dev model server (TF Serving gRPC API: DeepCell-signature models with synthetic "
             "heads, Identity, NuclearSegmentation:1, SimulatedGPU)",
        description="Serve built-in numpy models over TensorFlow Serving's gRPC API: the DeepCell Kiosk's "
                    "models with their real serving signatures and synthetic heads (NuclearSegmentation:6, "
                    "MultiplexSegmentation:9, SpotDetection:3, NuclearTrackingNE:6, ...; --list-models shows "
                    "them all), plus Identity, NuclearSegmentation:1 and SimulatedGPU; with --model-dir also "
                    "TensorFlow SavedModels laid out as DIR/<name>/<version>/saved_model.pb.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0 picks a free one)")
    p.add_argument("--max-batch-size", type=int, default=0,
                   help="refuse larger batches with TF Serving's error text (0: no limit)")
    p.add_argument("--fail-rate", type=float, default=0.0, help="fraction of Predict calls failed with UNAVAILABLE")
    p.add_argument("--seed", type=int, default=None, help="seed of the failure injection")
    p.add_argument("--response-encoding", choices=("fields", "content"), default="fields",
                   help="reply with repeated *_val fields like TF Serving (default) or tensor_content")
    p.add_argument("--model-dir", default="", help="also serve the SavedModels in DIR (needs TensorFlow)")
    p.add_argument("--workers", type=int, default=8, help="request threads (default 8)")
    p.add_argument("--gpu-base-ms", type=float, default=4.0, help="SimulatedGPU fixed time per batch in ms")
    p.add_argument("--gpu-per-sample-ms", type=float, default=0.0, help="SimulatedGPU time per sample in ms")
    p.add_argument("--gpu-per-mpixel-ms", type=float, default=None,
                   help="SimulatedGPU time per megapixel in ms (default 7.63: 0.5 ms per 256x256 tile)")
    p.add_argument("--gpu-dtype", default="float32", choices=("float32", "float16", "uint16", "uint8"),
                   help="the input (and output) dtype SimulatedGPU's metadata declares")
    p.add_argument("--gpu-tile", type=int, default=256, help="SimulatedGPU input tile size (0: any size)")
    p.add_argument("--simulate-gpu", action="store_true",
                   help="the DeepCell models also hold the SimulatedGPU for its time per batch (benchmarks)")
    p.add_argument("--list-models", action="store_true",
                   help="print every built-in model's signature (name:version, inputs, outputs) and exit")
    p.set_defaults(func=run)


def describe(models: list) -> str:
    """One line per model: `name:version  inputs -> outputs` (float32 unless said; -1 = any size)."""
    def specs(d: dict) -> str:
        return ", ".join(f"{k}{list(v.shape)}" + ("" if v.dtype.name == "float32" else f" {v.dtype.name}")
                         for k, v in d.items())

    lines = []
    for m in models:
        meta = m.metadata()
        lines.append(f"{m.name}:{m.version}  {specs(meta.inputs)} -> {specs(meta.outputs)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..tfserving.catalog import builtin_models
    from ..tfserving.models import load_model_dir
    from ..tfserving.server import DevModelServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 0.0 <= args.fail_rate <= 1.0:
        raise ConfigError(f"--fail-rate must be between 0 and 1, got {args.fail_rate}")
    from ..tfserving.models import DEFAULT_GPU_MS_PER_MPIXEL

    per_mpixel = DEFAULT_GPU_MS_PER_MPIXEL if args.gpu_per_mpixel_ms is None else args.gpu_per_mpixel_ms
    models = builtin_models(args.gpu_base_ms / 1000.0, args.gpu_per_sample_ms / 1000.0, args.gpu_tile,
                            simulate_gpu=args.simulate_gpu, gpu_per_mpixel=per_mpixel / 1000.0,
                            gpu_dtype=args.gpu_dtype)
    if args.list_models:
        print(describe(models))
        return 0
    if args.model_dir:
        try:
            models += load_model_dir(args.model_dir)
        except ImportError:
            raise ConfigError("--model-dir needs TensorFlow: pip install 'redis-consumer[serve]'") from None
    server = DevModelServer(models, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
                            fail_rate=args.fail_rate, response_encoding=args.response_encoding,
                            workers=args.workers, seed=args.seed)
    try:
        port = server.start()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    names = ", ".join(f"{m.name}:{m.version}" for m in models)
    print(f"serving {names} on {args.host}:{port}", file=sys.stderr, flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(1.0)
    return 0
