"""`redis-consumer`: one entry point, one module per subcommand.

Subcommand modules import their heavy dependencies inside their `run` functions, so
`redis-consumer --help` and the worker start fast. User mistakes print one line on stderr and
exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import ConfigError, RedisConsumerError

#: Subcommand modules under `redis_consumer.cli`, in `--help` order.
COMMANDS = (
    "consume",
    "exporter",
    "submit",
    "status",
    "results",
    "watch",
    "logs",
    "dead",
    "config",
    "serve_model",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redis-consumer",
        description="Reliable Redis-queue workers for TensorFlow Serving inference (DeepCell Kiosk compatible).",
    )
    parser.add_argument("--version", action="version", version=f"redis-consumer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"{__package__}.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"redis-consumer: {exc}", file=sys.stderr)
        return 2
    except RedisConsumerError as exc:
        print(f"redis-consumer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
