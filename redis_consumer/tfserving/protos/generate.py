"""Regenerate `rcserving_pb2.py` from `rcserving.proto` with grpcio-tools (a dev dependency).

The generated module is committed so installing and importing the worker needs no build step.
Run: `python -m redis_consumer.tfserving.protos.generate` after editing the .proto, and keep the
`protobuf` floor in setup.cfg at or above the version the generated code asks for (its header
says "Protobuf Python Version"). A test checks the committed file matches this script's output.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = "# ruff: noqa\n"  # generated code: not ours to lint


def generate(out_dir: Path = HERE) -> Path:
    """Write rcserving_pb2.py into `out_dir` and return its path."""
    import grpc_tools  # dev-only dependency
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = ["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out_dir}", str(HERE / "rcserving.proto")]
    if protoc.main(args):
        raise RuntimeError("protoc failed on rcserving.proto")
    target = Path(out_dir) / "rcserving_pb2.py"
    target.write_text(HEADER + target.read_text())
    return target


if __name__ == "__main__":
    print(generate(), file=sys.stderr)
