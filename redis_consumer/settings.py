"""Typed settings, read from the environment exactly once.

Every variable the project reads is declared in `SPECS` with its type, default and meaning; the
README's configuration table is checked against this list by a test. Kiosk variable names are
kept where the DeepCell Kiosk has one. A bad value raises `ConfigError` naming the variable and
what it expects; entrypoints turn that into one line on stderr and exit code 2.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Spec:
    """One environment variable: how to parse it and what it means."""

    name: str
    kind: str  # str | int | float | bool | choice | list
    default: Any
    help: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False


def _s(name, default, help, **kw):
    return Spec(name, "str", default, help, **kw)


def _i(name, default, help, minimum=0, **kw):
    return Spec(name, "int", default, help, minimum=minimum, **kw)


def _f(name, default, help, minimum=0.0, **kw):
    return Spec(name, "float", default, help, minimum=minimum, **kw)


def _b(name, default, help):
    return Spec(name, "bool", default, help)


def _c(name, default, choices, help):
    return Spec(name, "choice", default, help, choices=tuple(choices))


def _l(name, default, help):
    return Spec(name, "list", default, help)


SPECS: tuple[Spec, ...] = (
    # --- queue and worker (kiosk names first) ---
    _s("QUEUE", "segmentation", "Redis list this worker consumes (zip consumers read `{QUEUE}-zip`)."),
    _s("CONSUMER_TYPE", "segmentation", "Consumer to run: a registered name or `package.module:Class`."),
    _s("HOSTNAME", "", "Worker identity prefix; the pod name in Kubernetes (defaults to the host name)."),
    _f("EMPTY_QUEUE_TIMEOUT", 5.0, "Seconds one blocking claim waits before re-checking shutdown and health.", minimum=0.1),
    _i("EXPIRE_TIME", 3600, "Seconds a finished job hash lives before Redis expires it.", minimum=1),
    _i("METADATA_EXPIRE_TIME", 30, "Seconds model metadata stays cached in Redis.", minimum=1),
    _f("HEARTBEAT_INTERVAL", 5.0, "Seconds between liveness heartbeats (and reaper runs).", minimum=0.05),
    _f("HEARTBEAT_TTL", 30.0, "Seconds without a heartbeat after which a worker counts as dead.", minimum=0.1),
    _i("MAX_ATTEMPTS", 3, "Claims a job may get before it is dead-lettered.", minimum=1),
    _f("JOB_TIMEOUT", 3600.0, "Seconds one job may run before it fails as a system error.", minimum=1.0),
    _f("SHUTDOWN_GRACE", 20.0, "Seconds a SIGTERMed worker may spend finishing its job before requeueing it.", minimum=0.0),
    _f("RETRY_BACKOFF_CAP", 30.0, "Cap in seconds of the exponential backoff between retries.", minimum=0.0),
    _b("ALLOW_ROOT", False, "Let the worker run as root inside a container (refused by default)."),
    # --- redis ---
    _s("REDIS_URL", "", "redis:// or rediss:// URL (password, TLS, db); overrides REDIS_HOST/REDIS_PORT.", secret=True),
    _s("REDIS_HOST", "127.0.0.1", "Redis or Sentinel host (the kiosk points it at Sentinel)."),
    _i("REDIS_PORT", 6379, "Redis or Sentinel port (Sentinel is detected, e.g. on 26379).", minimum=1),
    _f("REDIS_TIMEOUT", 3.0, "Socket timeout in seconds for Redis commands.", minimum=0.1),
    _s("REDIS_SENTINEL_MASTER", "", "Sentinel master name (default: the only one Sentinel monitors, else `mymaster`)."),
    _s("REDIS_PASSWORD", "", "Password for REDIS_HOST/REDIS_PORT (and the master behind Sentinel).", secret=True),
    # --- tensorflow serving ---
    _s("TF_HOST", "127.0.0.1", "TensorFlow Serving host."),
    _i("TF_PORT", 8500, "TensorFlow Serving gRPC port.", minimum=1),
    _f("GRPC_TIMEOUT", 30.0, "Deadline in seconds of one gRPC call (never beyond the job's deadline).", minimum=0.1),
    _f("GRPC_BACKOFF", 3.0, "Base backoff in seconds between gRPC retries (capped, full jitter).", minimum=0.0),
    _i("MAX_RETRY", 5, "Retries of a failed gRPC call (UNAVAILABLE, DEADLINE_EXCEEDED).", minimum=0),
    _i("TF_MAX_BATCH_SIZE", 32, "Largest batch sent to TF Serving until the server says otherwise.", minimum=1),
    _i("PIPELINE_DEPTH", 2, "Predict requests kept in flight per worker.", minimum=1),
    # --- storage ---
    _s("STORAGE_BUCKET", "file:///tmp/redis-consumer-bucket", "Bucket URL: s3://bucket[/prefix], gs://bucket[/prefix] or file:///dir."),
    _s("AWS_REGION", "us-east-1", "S3 region."),
    _s("AWS_ACCESS_KEY_ID", "", "S3 access key (empty: boto3's usual credential chain).", secret=True),
    _s("AWS_SECRET_ACCESS_KEY", "", "S3 secret key.", secret=True),
    _s("GOOGLE_APPLICATION_CREDENTIALS", "", "Path of a GCS service-account JSON (needed to sign GCS URLs)."),
    _s("AWS_ENDPOINT_URL", "", "S3-compatible endpoint (MinIO, moto); empty for AWS."),
    _s("STORAGE_EMULATOR_HOST", "", "GCS emulator address, honoured by google-cloud-storage."),
    _l("ALLOWED_INPUT_PREFIXES", (), "Comma-separated key prefixes jobs may read; empty allows the whole bucket."),
    _i("MAX_INPUT_BYTES", 1 << 30, "Largest input object a job may download, in bytes.", minimum=1),
    _c("OUTPUT_URL_MODE", "signed", ("signed", "public", "key"), "What `output_url` holds: a signed URL, a public URL or the key."),
    _i("SIGNED_URL_TTL", 7 * 24 * 3600, "Seconds a signed result URL stays valid.", minimum=1),
    _f("STORAGE_RETRY_TIMEOUT", 60.0, "Seconds one storage call keeps retrying transient errors (5xx, throttling, resets).", minimum=0.0),
    # --- images and consumers ---
    _i("MAX_IMAGE_HEIGHT", 2048, "Largest image height in pixels (checked from the header).", minimum=1),
    _i("MAX_IMAGE_WIDTH", 2048, "Largest image width in pixels (checked from the header).", minimum=1),
    _i("MAX_IMAGE_FRAMES", 64, "Most frames/pages one image may have.", minimum=1),
    _i("MIN_IMAGE_SIZE", 8, "Smallest image height and width in pixels; smaller images fail as user errors.", minimum=1),
    _s("SEGMENTATION_MODEL", "NuclearSegmentation:1", "Model `NAME:VERSION` used when a job names none."),
    _i("MAX_ZIP_ENTRIES", 1000, "Most entries one uploaded zip may hold.", minimum=1),
    _i("MAX_ZIP_BYTES", 4 << 30, "Most uncompressed bytes one uploaded zip may expand to.", minimum=1),
    _f("MAX_ZIP_RATIO", 200.0, "Highest compression ratio an entry may have (zip-bomb guard).", minimum=1.0),
    _i("JOB_LOG_LINES", 200, "Log lines kept per job in Redis for `redis-consumer logs`.", minimum=0),
    # --- observability ---
    _c("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "Log level."),
    _c("LOG_FORMAT", "text", ("text", "json"), "`json` for one JSON object per line (clusters)."),
    _i("METRICS_PORT", 9090, "Port of /metrics, /healthz and /readyz; 0 disables the server.", minimum=0),
    # --- image bounds (kiosk engineer: hardening item 4) ---
    _i("MAX_IMAGE_CHANNELS", 16, "Most channels one image may have (checked from the header).", minimum=1),
    _i("MAX_DECODED_BYTES", 1 << 30, "Most bytes an image may take once decoded (from the header, before decoding).", minimum=1),
)

_SPEC_BY_NAME = {s.name: s for s in SPECS}
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def _parse(spec: Spec, raw: str) -> Any:
    raw = raw.strip()
    if spec.kind == "str":
        return raw
    if spec.kind == "list":
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    if spec.kind == "bool":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{spec.name} must be true or false, got {raw!r}")
    if spec.kind == "choice":
        for choice in spec.choices:
            if raw.lower() == choice.lower():
                return choice
        raise ConfigError(f"{spec.name} must be one of {', '.join(spec.choices)}, got {raw!r}")
    caster: Callable[[str], Any] = int if spec.kind == "int" else float
    try:
        value = caster(raw)
    except ValueError:
        what = "a whole number" if spec.kind == "int" else "a number"
        raise ConfigError(f"{spec.name} must be {what}, got {raw!r}") from None
    if spec.kind == "float" and math.isnan(value):
        raise ConfigError(f"{spec.name} must be a number, got {raw!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{spec.name} must be at least {spec.minimum:g}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """All configuration of one process, immutable once read."""

    QUEUE: str
    CONSUMER_TYPE: str
    HOSTNAME: str
    EMPTY_QUEUE_TIMEOUT: float
    EXPIRE_TIME: int
    METADATA_EXPIRE_TIME: int
    HEARTBEAT_INTERVAL: float
    HEARTBEAT_TTL: float
    MAX_ATTEMPTS: int
    JOB_TIMEOUT: float
    SHUTDOWN_GRACE: float
    RETRY_BACKOFF_CAP: float
    ALLOW_ROOT: bool
    REDIS_URL: str
    REDIS_HOST: str
    REDIS_PORT: int
    REDIS_TIMEOUT: float
    REDIS_SENTINEL_MASTER: str
    REDIS_PASSWORD: str
    TF_HOST: str
    TF_PORT: int
    GRPC_TIMEOUT: float
    GRPC_BACKOFF: float
    MAX_RETRY: int
    TF_MAX_BATCH_SIZE: int
    PIPELINE_DEPTH: int
    STORAGE_BUCKET: str
    AWS_REGION: str
    AWS_ACCESS_KEY_ID: str
    AWS_SECRET_ACCESS_KEY: str
    GOOGLE_APPLICATION_CREDENTIALS: str
    AWS_ENDPOINT_URL: str
    STORAGE_EMULATOR_HOST: str
    ALLOWED_INPUT_PREFIXES: tuple
    MAX_INPUT_BYTES: int
    OUTPUT_URL_MODE: str
    SIGNED_URL_TTL: int
    STORAGE_RETRY_TIMEOUT: float
    MAX_IMAGE_HEIGHT: int
    MAX_IMAGE_WIDTH: int
    MAX_IMAGE_FRAMES: int
    MIN_IMAGE_SIZE: int
    SEGMENTATION_MODEL: str
    MAX_ZIP_ENTRIES: int
    MAX_ZIP_BYTES: int
    MAX_ZIP_RATIO: float
    JOB_LOG_LINES: int
    LOG_LEVEL: str
    LOG_FORMAT: str
    METRICS_PORT: int
    MAX_IMAGE_CHANNELS: int
    MAX_DECODED_BYTES: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every variable in `SPECS`; keyword overrides win (handy for tests and the CLI)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in SPECS:
            if spec.name in overrides:
                values[spec.name] = overrides.pop(spec.name)
            elif spec.name in env:
                values[spec.name] = _parse(spec, env[spec.name])
            else:
                values[spec.name] = spec.default
        if overrides:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(overrides))}")
        if not values["HOSTNAME"]:
            values["HOSTNAME"] = socket.gethostname()
        if not values["QUEUE"]:
            raise ConfigError("QUEUE must name a Redis list, got an empty value")
        if values["HEARTBEAT_TTL"] <= values["HEARTBEAT_INTERVAL"]:
            raise ConfigError(
                f"HEARTBEAT_TTL must be larger than HEARTBEAT_INTERVAL ({values['HEARTBEAT_INTERVAL']:g}), "
                f"got {values['HEARTBEAT_TTL']:g}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update(changes)
        return Settings(**current)

    def public(self) -> dict[str, Any]:
        """Settings safe to log: secret values masked."""
        out = {}
        for spec in SPECS:
            value = getattr(self, spec.name)
            out[spec.name] = "***" if spec.secret and value else value
        return out

    def secret_values(self) -> list[str]:
        """Values that must never appear in logs (for the redaction filter)."""
        secrets = [getattr(self, s.name) for s in SPECS if s.secret and getattr(self, s.name)]
        for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            if os.environ.get(var):
                secrets.append(os.environ[var])
        return secrets


def spec(name: str) -> Spec:
    """The declaration of one variable."""
    return _SPEC_BY_NAME[name]


def markdown_table() -> str:
    """The README's configuration table, generated from `SPECS`."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for s in SPECS:
        default = ",".join(s.default) if isinstance(s.default, tuple) else s.default
        if s.kind == "bool":
            default = str(default).lower()
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `{s.name}` | {shown} | {s.help} |")
    return "\n".join(rows)
