"""`redis-consumer consume`: run one worker configured from the environment."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

from .. import startup
from ..errors import ConfigError
from ..settings import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "consume",
        help="run one worker from the environment (QUEUE, CONSUMER_TYPE, REDIS_*, ...)",
        description="Run one worker: claim jobs from QUEUE and process them with CONSUMER_TYPE until SIGTERM.",
    )
    p.set_defaults(func=lambda args: run())


def in_container() -> bool:
    """True inside Docker/Kubernetes (where running as root is refused by default)."""
    return bool(
        os.environ.get("KUBERNETES_SERVICE_HOST")
        or os.path.exists("/.dockerenv")
        or os.path.exists("/run/.containerenv")
        or os.environ.get("REDIS_CONSUMER_IN_CONTAINER")
    )


def build_worker(settings: Settings, **kwargs: Any):
    """The worker for these settings, with metrics middleware when METRICS_PORT is set."""
    from .. import storage
    from ..consumers import registry
    from ..worker import Worker

    storage.parse_url(settings.STORAGE_BUCKET)  # a malformed bucket URL stops the worker at start
    consumer_cls = registry.load(settings.CONSUMER_TYPE)
    settings = settings.for_consumer(consumer_cls)  # its own settings_spec: a bad value stops the start
    middleware = list(kwargs.pop("middleware", []))
    metrics_middleware = []
    if settings.METRICS_PORT > 0:
        from ..metrics import worker as worker_metrics

        metrics_middleware = worker_metrics.middleware_for(settings)
    worker = Worker(settings, consumer_cls, middleware=middleware + metrics_middleware, **kwargs)
    if metrics_middleware:
        worker_metrics.attach(worker, metrics_middleware)  # probes answer while Redis is still down
    return worker


def sweep_scratch(settings: Settings) -> None:
    """Remove scratch folders that killed workers left in TMPDIR (live workers' are kept)."""
    from ..utils import tempdirs

    try:
        removed = tempdirs.sweep(min_age=settings.JOB_TIMEOUT + settings.SHUTDOWN_GRACE)
    except OSError as exc:  # an unreadable TMPDIR must not stop the worker
        logging.getLogger(__name__).warning("scratch sweep of TMPDIR failed (%s)", exc)
        return
    if removed:
        logging.getLogger(__name__).info("removed %d scratch folder(s) left by stopped workers", len(removed))


def _exit_during_startup(signum: int, frame: Any) -> None:
    raise SystemExit(0)  # nothing claimed yet, so nothing to hand back


def run(environ: dict[str, str] | None = None) -> int:
    """Parse settings (exit 2 on a bad value), configure logs, serve until SIGTERM."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_during_startup)
    startup.prepare_process()  # before numpy or scipy is imported (see redis_consumer/startup.py)
    try:
        return _serve(environ)
    finally:
        startup.startup_done()  # the worker did it after its warm-up; here for the early exits


def _serve(environ: dict[str, str] | None) -> int:
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        print(f"redis-consumer: {exc}", file=sys.stderr)
        return 2
    from .. import logs

    logs.configure(settings.LOG_LEVEL, settings.LOG_FORMAT, settings.secret_values())
    if hasattr(os, "geteuid") and os.geteuid() == 0 and in_container() and not settings.ALLOW_ROOT:
        print(
            "redis-consumer: refusing to run as root inside a container; run as a non-root user "
            "or set ALLOW_ROOT=true",
            file=sys.stderr,
        )
        return 2
    sweep_scratch(settings)
    try:
        worker = build_worker(settings)
    except ConfigError as exc:
        print(f"redis-consumer: {exc}", file=sys.stderr)
        return 2
    if worker.settings.secret_values() != settings.secret_values():  # a plug-in declared secrets
        logs.configure(settings.LOG_LEVEL, settings.LOG_FORMAT, worker.settings.secret_values())
    logging.getLogger(__name__).info("settings: %s", worker.settings.public())
    from .. import storage

    storage.check_public_access(worker.settings)  # one line at start when public URLs cannot work
    return worker.run()
