"""Shared plumbing of the user-facing subcommands: settings, Redis, bucket, one-line errors, tables.

Every user mistake (unreachable Redis, missing file, bad bucket URL, unknown job) becomes a
`CliError`: one line on stderr and a non-zero exit code, never a traceback. The `command`
decorator does that translation for each subcommand's `run(args)`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, RedisConsumerError, UserError, one_sentence
from ..settings import Settings

#: Exit code for user mistakes (bad arguments, unreachable services, unknown jobs).
EXIT_USAGE = 2
#: Exit code of `status`/`logs` while a job is still running.
EXIT_RUNNING = 3


class CliError(RedisConsumerError):
    """A user mistake: printed as one line on stderr; the process exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print one error line and return `code` (for `return fail(...)`)."""
    print(f"redis-consumer: {one_sentence(message)}", file=sys.stderr)
    return code


def command(func: Callable[[Any], int | None]) -> Callable[[Any], int]:
    """Wrap a subcommand: map every expected failure to one stderr line and an exit code."""

    @functools.wraps(func)
    def wrapper(args: Any) -> int:
        import redis

        try:
            return int(func(args) or 0)
        except CliError as exc:
            return fail(str(exc), exc.code)
        except (ConfigError, UserError) as exc:
            return fail(str(exc), EXIT_USAGE)
        except RedisConsumerError as exc:
            return fail(str(exc), 1)
        except redis.AuthenticationError:
            return fail(refused_password(redis_where(args)))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            return fail(cannot_reach(redis_where(args), _short(exc)))
        except redis.exceptions.OutOfMemoryError:
            return fail(f"Redis at {redis_where(args)} is out of memory (maxmemory reached) and refused the write; "
                        "free memory or raise maxmemory, then try again", 1)
        except redis.ResponseError as exc:
            return fail(f"Redis refused a command ({_short(exc)})", 1)
        except BrokenPipeError:
            return 0
        except KeyboardInterrupt:
            return 130

    return wrapper


def cannot_reach(where: str, reason: str) -> str:
    """The message for a Redis nobody answers at `where`."""
    return f"cannot reach Redis at {where} ({reason}); is it running? set REDIS_URL"


def refused_password(where: str) -> str:
    """The message for a Redis that rejected our credentials."""
    return f"Redis at {where} refused our password; check REDIS_URL/REDIS_PASSWORD"


def _short(exc: BaseException) -> str:
    # a script's error carries "script: <sha>, on @user_script:N." - noise to a user
    text = re.sub(r"\.?\s*script: [0-9a-f]{40}.*$", "", str(exc)) or type(exc).__name__
    return one_sentence(text, 160)


# -- settings, redis, bucket ------------------------------------------------------------------
def add_connection_args(parser: Any, bucket: bool = False) -> None:
    """`--redis-url` (and `--bucket`) overriding REDIS_URL / STORAGE_BUCKET."""
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (default: REDIS_URL or REDIS_HOST/REDIS_PORT)")
    if bucket:
        parser.add_argument("--bucket", metavar="URL", help="bucket URL (default: STORAGE_BUCKET)")


def load_settings(args: Any = None, **overrides: Any) -> Settings:
    """Settings from the environment, with the command line's overrides."""
    if args is not None:
        if getattr(args, "redis_url", None):
            overrides["REDIS_URL"] = args.redis_url
        if getattr(args, "bucket", None):
            overrides["STORAGE_BUCKET"] = args.bucket
    return Settings.from_env(**overrides)


def redis_where(args: Any = None) -> str:
    """Where we connect, for error messages (never the password)."""
    from ..queue.connection import describe

    try:
        return describe(load_settings(args))
    except ConfigError:
        return "the configured address"


def connect_redis(settings: Settings):
    """A decoded client that has answered PING (else a one-line `CliError`)."""
    import redis

    from ..queue.connection import connect, describe

    _probe_tcp(settings, describe(settings))
    client = connect(settings)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise CliError(refused_password(describe(settings))) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise CliError(cannot_reach(describe(settings), _short(exc))) from None
    return client


def _probe_tcp(settings: Settings, where: str) -> None:
    """Fail in milliseconds when nothing listens (the client's retries are for blips, not typos)."""
    import socket
    from urllib.parse import urlparse

    if settings.REDIS_URL:
        parsed = urlparse(settings.REDIS_URL)
        if parsed.scheme not in ("redis", "rediss"):
            return  # unix sockets and malformed URLs: connect() reports them
        try:
            host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        except ValueError:
            return
    else:
        host, port = settings.REDIS_HOST, settings.REDIS_PORT
    try:
        socket.create_connection((host, port), timeout=settings.REDIS_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CliError(cannot_reach(where, reason)) from None


def bucket_client(settings: Settings):
    """The storage client for STORAGE_BUCKET; a bad URL is a one-line `CliError`."""
    from urllib.parse import urlparse

    url = settings.STORAGE_BUCKET
    scheme = urlparse(url).scheme
    if scheme not in ("s3", "gs", "file") or not urlparse(url).netloc and scheme != "file":
        raise CliError(f"bucket URL must look like s3://bucket, gs://bucket or file:///dir, got {url!r}")
    from .. import storage

    try:
        return storage.get_client(url, settings=settings)
    except (UserError, ConfigError, ValueError) as exc:
        raise CliError(f"bad bucket URL {url!r}: {_short(exc)}") from None


def no_job(key: str) -> CliError:
    """The error for a job key Redis does not hold (exit code 4)."""
    return CliError(f"no job {key!r} in Redis (never submitted, or expired after EXPIRE_TIME)", 4)


def check_job_type(key: str, kind: str) -> None:
    """A `CliError` (exit code 4) unless `kind` (the reply of TYPE key) is a hash."""
    if kind == "none":
        raise no_job(key)
    if kind != "hash":
        raise CliError(f"{key!r} is a Redis {kind}, not a job hash", 4)


def job_fields(client: Any, key: str) -> dict[str, str]:
    """The job hash, or a `CliError` when no such job exists (never submitted or expired)."""
    check_job_type(key, client.type(key))
    return client.hgetall(key)


def known_queues(client: Any) -> list[str]:
    """Queue names workers registered, plus any list that has jobs waiting or dead."""
    from ..queue import keys

    names = set(client.smembers(keys.QUEUES_SET))
    prefix = keys.dead("")
    for dead in client.scan_iter(match=prefix + "*", count=500):
        names.add(dead[len(prefix):])
    return sorted(names)


# -- output -----------------------------------------------------------------------------------
def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned text table (no dependencies)."""
    rows = [["" if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def fields_table(fields: Mapping[str, str]) -> str:
    """One job's fields as `name  value` lines, in a stable, readable order."""
    first = ("status", "progress", "model_name", "model_version", "original_name", "input_file_name",
             "created_at", "started_at", "finished_at", "output_file_name", "output_url", "reason",
             "failure_type", "attempts")
    order = [k for k in first if k in fields] + sorted(k for k in fields if k not in first)
    width = max((len(k) for k in order), default=0)
    return "\n".join(f"{k.ljust(width)}  {fields[k]}" for k in order)


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
