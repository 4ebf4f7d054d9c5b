"""Connect to Redis: a URL, a plain host/port, or a Sentinel that is detected automatically.

The kiosk points `REDIS_HOST`/`REDIS_PORT` at Sentinel (port 26379). We ask the endpoint for its
`ROLE`; a Sentinel answers `sentinel`, and we then talk only to the master it names (re-resolved
after every connection error or READONLY reply, so failovers are followed and replicas are never
read). Short blips are retried by redis-py with jittered exponential backoff; long outages are the
worker loop's business (it backs off and reconnects, it never crash-loops).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlparse

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import ConfigError
from ..settings import Settings

try:
    from redis.driver_info import DriverInfo
except ImportError:  # redis-py before 7.1 reads its version once, at import
    DriverInfo = None

log = logging.getLogger(__name__)

#: Errors after which a command may be retried on a fresh connection.
RETRYABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, ConnectionResetError, OSError)


def _retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3)


def _common(settings: Settings, socket_timeout: float | None) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout if socket_timeout is not None else settings.REDIS_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": 15,
        "retry": _retry(),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ReadOnlyError],
        "decode_responses": True,
        "client_name": f"redis-consumer:{settings.HOSTNAME}"[:120],
        **_driver_info(),
    }


def _driver_info() -> dict[str, Any]:
    """What CLIENT SETINFO reports (redis-py's name and version, as by default), given up front:
    else every new connection looks redis-py's version up in the installed distributions
    (importlib.metadata walks sys.path: ~1 ms each here, ~10 ms the first time, on start-up's path)."""
    return {"driver_info": DriverInfo(lib_version=redis.__version__)} if DriverInfo is not None else {}


def _sentinel_masters(host: str, port: int, kwargs: dict[str, Any]) -> list[str] | None:
    """Master names if host:port is a Sentinel, else None."""
    probe = redis.Redis(host=host, port=port, **{k: v for k, v in kwargs.items() if k != "retry"})
    try:
        role = probe.execute_command("ROLE")
    except ResponseError:
        return None
    finally:
        probe.close()
    if isinstance(role, (list, tuple)) and role and str(role[0]) == "sentinel":
        return [str(name) for name in (role[1] or [])]
    return None


def connect(settings: Settings, socket_timeout: float | None = None) -> redis.Redis:
    """A client for the Redis master named by the settings.

    `socket_timeout` overrides `REDIS_TIMEOUT` (the blocking claim client needs one longer than
    its BLMOVE timeout). Raises `ConfigError` for a malformed URL; connection errors surface on
    first use, where callers retry.
    """
    return connect_all(settings, socket_timeout)[0]


def connect_all(settings: Settings, *socket_timeouts: float | None) -> list[redis.Redis]:
    """One client per socket timeout (None: `REDIS_TIMEOUT`), the endpoint probed only once.

    A worker needs several clients (claims, supervisor, the rest); asking the endpoint whether it
    is a Sentinel once instead of once per client keeps start-up to one probe.
    """
    timeouts = socket_timeouts or (None,)
    base = _common(settings, None)
    if settings.REDIS_URL:
        url = settings.REDIS_URL
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"REDIS_URL must start with redis://, rediss:// or unix://, got scheme {parsed.scheme!r}")
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        password = parsed.password or settings.REDIS_PASSWORD or None
        tls = _tls_options(parsed.scheme, parse_qs(parsed.query))
    else:
        host, port, password, tls, url = settings.REDIS_HOST, settings.REDIS_PORT, settings.REDIS_PASSWORD or None, {}, None
    masters = None
    if url is None or not url.startswith("unix://"):
        try:
            masters = _sentinel_masters(host, port, {**base, "password": password, **tls})
        except (*RETRYABLE, ResponseError):
            masters = None  # unreachable now or not answering ROLE: plain Redis; the worker loop retries
    if masters is None:
        if url:
            return [redis.Redis.from_url(url, **_common(settings, t)) for t in timeouts]
        return [redis.Redis(host=host, port=port, password=password, **_common(settings, t)) for t in timeouts]
    name = settings.REDIS_SENTINEL_MASTER or (masters[0] if len(masters) == 1 else "mymaster")
    if masters and name not in masters:
        raise ConfigError(f"REDIS_SENTINEL_MASTER must be one of {', '.join(masters)}, got {name!r}")
    log.info("redis endpoint %s:%s is a Sentinel; following master %r", host, port, name)
    sentinel_kwargs = {"socket_timeout": settings.REDIS_TIMEOUT, "password": password, **tls}
    return [
        Sentinel([(host, port)], sentinel_kwargs=sentinel_kwargs, **_common(settings, t), **tls).master_for(
            name, password=password, check_connection=True
        )
        for t in timeouts
    ]


def _tls_options(scheme: str, query: dict[str, list[str]]) -> dict[str, Any]:
    if scheme != "rediss":
        return {}
    opts: dict[str, Any] = {"ssl": True}
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
        if key in query:
            opts[key] = query[key][0]
    return opts


def describe(settings: Settings) -> str:
    """Where we connect, for logs and errors (never the password)."""
    if settings.REDIS_URL:
        parsed = urlparse(settings.REDIS_URL)
        return f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 6379}"
    return f"{settings.REDIS_HOST}:{settings.REDIS_PORT}"


def master_moved(client: redis.Redis) -> bool:
    """For a Sentinel-managed client: ask Sentinel where the master is now.

    redis-py drops idle connections when the address changed; we report the change so the
    worker can also drop the connection it blocks on. Plain clients always answer False.
    """
    pool = client.connection_pool
    if not hasattr(pool, "get_master_address"):
        return False
    before = getattr(getattr(pool, "proxy", pool), "master_address", None)
    try:
        after = pool.get_master_address()
    except RETRYABLE:
        return False
    except redis.RedisError:
        return False
    return before is not None and after != before
