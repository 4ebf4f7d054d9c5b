"""Regenerate `rcserving_pb2.py` from `rcserving.proto` with grpcio-tools (a dev dependency).

The generated module is committed so installing and importing the worker needs no build step.
Run: `python -m redis_consumer.tfserving.protos.generate` after editing the .proto, and keep the
`protobuf` floor in setup.cfg at or above the version the generated code asks for.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    from grpc_tools import protoc  # dev-only dependency
    import grpc_tools

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = ["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={HERE}", str(HERE / "rcserving.proto")]
    code = protoc.main(args)
    if code:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
