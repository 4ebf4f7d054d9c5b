"""`redis-consumer exporter`: serve per-queue depth metrics for Prometheus and the HPA."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from ..errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "exporter",
        help="serve queue depth metrics (waiting, in-flight, dead, oldest age, consumers) on /metrics",
        description=(
            "Export per-queue metrics for Prometheus: redis_consumer_queue_{waiting,in_flight,dead,items,"
            "consumers,oldest_job_age_seconds}. Redis is configured from the environment (REDIS_URL or "
            "REDIS_HOST/REDIS_PORT, Sentinel detected). One exporter per cluster is enough."
        ),
    )
    p.add_argument("--queues", default="",
                   help="comma-separated queue names (default: every queue in the `queues` set workers register in)")
    p.add_argument("--port", type=int, default=9100, help="HTTP port of /metrics and /healthz (default 9100)")
    p.add_argument("--host", default="", help="address to bind (default: all interfaces)")
    p.add_argument("--once", action="store_true", help="print one scrape in Prometheus text format and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, environ: dict[str, str] | None = None) -> int:
    from .. import logs
    from ..metrics import exporter
    from ..metrics.http import HTTPServer
    from ..queue.connection import connect
    from ..settings import Settings

    settings = Settings.from_env(environ)
    logs.configure(settings.LOG_LEVEL, settings.LOG_FORMAT, settings.secret_values())
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    client = connect(settings)
    routes = exporter.routes(client, queues)
    if args.once:
        _status, _, body = routes["/metrics"]()
        sys.stdout.write(body.decode())
        return 0
    try:
        server = HTTPServer(routes, args.port, args.host)
    except OSError as exc:
        raise ConfigError(f"cannot serve on port {args.port} ({exc.strerror or exc})") from None
    signal.signal(signal.SIGTERM, _exit_cleanly)
    logging.getLogger(__name__).info(
        "exporter on :%d for %s", server.port, ", ".join(queues) if queues else "queues in the `queues` set"
    )
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
    return 0


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)
