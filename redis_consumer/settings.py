"""Typed settings, read from the environment exactly once, each declared exactly once.

Every variable the project reads is one `Setting` attribute of `Settings` below: its type,
default, meaning and checks. That declaration is the typed attribute (`settings.QUEUE` is a
`str` to editors), the validation (a `ConfigError` naming the variable; entrypoints print it as
one line and exit 2), the README's configuration table and `redis-consumer config --markdown`.
Kiosk variable names are kept where the DeepCell Kiosk has one, and the kiosk's older names are
still read as aliases. Plug-in consumers declare their own settings in `settings_spec`
(see `Settings.for_consumer`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError
from .settings_base import Setting, SettingsBase, specs_of
from .settings_base import markdown_table as _table

Spec = Setting  # the old name of a declaration

# Kiosk citations below: KRC = vanvalenlab/kiosk-redis-consumer redis_consumer/settings.py at
# a183af9 (0.17.x) unless another commit is named; see /work/shared/kiosk-protocol.md section 3.


def _model(value: str) -> str | None:
    name, sep, version = value.rpartition(":")
    if value and not (sep and name and version.isdigit()):
        return "a model NAME:VERSION such as NuclearSegmentation:6"
    return None


def _json_object(value: str) -> str | None:
    import json

    try:
        parsed = json.loads(value) if value.strip() else {}
    except ValueError:
        parsed = None
    return None if isinstance(parsed, dict) else 'a JSON object such as {"radius": 8} (or empty)'


def _probability(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else "a number from 0 to 1"


class Settings(SettingsBase):
    """All configuration of one process, immutable once read."""

    __slots__ = ()

    # --- queue and worker (kiosk names first) ---
    QUEUE = Setting("QUEUE", str, "segmentation", "Redis list this worker consumes (zip consumers read `{QUEUE}-zip`).")
    CONSUMER_TYPE = Setting("CONSUMER_TYPE", str, "segmentation", "Consumer to run: a registered name or `package.module:Class`.")
    HOSTNAME = Setting("HOSTNAME", str, "", "Worker identity prefix; the pod name in Kubernetes (defaults to the host name).")
    EMPTY_QUEUE_TIMEOUT = Setting("EMPTY_QUEUE_TIMEOUT", float, 5.0, "Seconds one blocking claim waits before re-checking shutdown and health.", minimum=0.1)
    EXPIRE_TIME = Setting("EXPIRE_TIME", int, 3600, "Seconds a finished job hash lives before Redis expires it (at least 600: the kiosk's page and kiosk-client expire it themselves after reading it and need it there).", minimum=600)
    METADATA_EXPIRE_TIME = Setting("METADATA_EXPIRE_TIME", int, 30, "Seconds model metadata stays cached in Redis.", minimum=1)
    HEARTBEAT_INTERVAL = Setting("HEARTBEAT_INTERVAL", float, 2.0, "Seconds between liveness heartbeats (and reaper runs).", minimum=0.05)
    HEARTBEAT_TTL = Setting("HEARTBEAT_TTL", float, 6.0, "Seconds without a heartbeat after which a worker counts as dead.", minimum=0.1)
    MAX_ATTEMPTS = Setting("MAX_ATTEMPTS", int, 3, "Claims a job may get before it is dead-lettered.", minimum=1)
    JOB_TIMEOUT = Setting("JOB_TIMEOUT", float, 3600.0, "Seconds one job may run before it fails as a system error.", minimum=1.0)
    SHUTDOWN_GRACE = Setting("SHUTDOWN_GRACE", float, 20.0, "Seconds a SIGTERMed worker may spend finishing its job before requeueing it.", minimum=0.0)
    RETRY_BACKOFF_CAP = Setting("RETRY_BACKOFF_CAP", float, 30.0, "Cap in seconds of the exponential backoff between retries.", minimum=0.0)
    ALLOW_ROOT = Setting("ALLOW_ROOT", bool, False, "Let the worker run as root inside a container (refused by default).")
    IDLE_MALLOC_TRIM = Setting("IDLE_MALLOC_TRIM", bool, True, "Return the heap jobs freed to the OS (glibc `malloc_trim`) when the worker finds its queue empty; a busy worker keeps it warm.")
    # --- redis ---
    REDIS_URL = Setting("REDIS_URL", str, "", "redis:// or rediss:// URL (password, TLS, db); overrides REDIS_HOST/REDIS_PORT.", secret=True)
    REDIS_HOST = Setting("REDIS_HOST", str, "127.0.0.1", "Redis or Sentinel host (the kiosk points it at Sentinel).")
    REDIS_PORT = Setting("REDIS_PORT", int, 6379, "Redis or Sentinel port (Sentinel is detected, e.g. on 26379).", minimum=1)
    REDIS_TIMEOUT = Setting("REDIS_TIMEOUT", float, 3.0, "Socket timeout in seconds for Redis commands.", minimum=0.1)
    REDIS_SENTINEL_MASTER = Setting("REDIS_SENTINEL_MASTER", str, "", "Sentinel master name (default: the only one Sentinel monitors, else `mymaster`).")
    REDIS_PASSWORD = Setting("REDIS_PASSWORD", str, "", "Password for REDIS_HOST/REDIS_PORT (and the master behind Sentinel).", secret=True)
    # --- tensorflow serving ---
    TF_HOST = Setting("TF_HOST", str, "127.0.0.1", "TensorFlow Serving host.")
    TF_PORT = Setting("TF_PORT", int, 8500, "TensorFlow Serving gRPC port.", minimum=1)
    GRPC_TIMEOUT = Setting("GRPC_TIMEOUT", float, 30.0, "Deadline in seconds of one gRPC call (never beyond the job's deadline).", minimum=0.1)
    GRPC_BACKOFF = Setting("GRPC_BACKOFF", float, 3.0, "Base backoff in seconds between gRPC retries (capped, full jitter).", minimum=0.0)
    MAX_RETRY = Setting("MAX_RETRY", int, 5, "Retries of a failed gRPC call (UNAVAILABLE, DEADLINE_EXCEEDED).", minimum=0)
    TF_MAX_BATCH_SIZE = Setting("TF_MAX_BATCH_SIZE", int, 32, "Largest batch sent to TF Serving until the server says otherwise.", minimum=1)
    PIPELINE_DEPTH = Setting("PIPELINE_DEPTH", int, 2, "Predict requests kept in flight per worker.", minimum=1)
    # --- storage ---
    STORAGE_BUCKET = Setting("STORAGE_BUCKET", str, "file:///tmp/redis-consumer-bucket", "Bucket URL: s3://bucket[/prefix], gs://bucket[/prefix] or file:///dir.")
    AWS_REGION = Setting("AWS_REGION", str, "us-east-1", "S3 region.")
    AWS_ACCESS_KEY_ID = Setting("AWS_ACCESS_KEY_ID", str, "", "S3 access key (empty: botocore's usual credential chain).", secret=True)
    AWS_SECRET_ACCESS_KEY = Setting("AWS_SECRET_ACCESS_KEY", str, "", "S3 secret key.", secret=True)
    GOOGLE_APPLICATION_CREDENTIALS = Setting("GOOGLE_APPLICATION_CREDENTIALS", str, "", "Path of a GCS service-account JSON (needed to sign GCS URLs).")
    AWS_ENDPOINT_URL = Setting("AWS_ENDPOINT_URL", str, "", "S3-compatible endpoint (MinIO, moto); empty for AWS.")
    STORAGE_EMULATOR_HOST = Setting("STORAGE_EMULATOR_HOST", str, "", "GCS emulator address, honoured by google-cloud-storage.")
    ALLOWED_INPUT_PREFIXES = Setting("ALLOWED_INPUT_PREFIXES", tuple, (), "Comma-separated key prefixes jobs may read; empty allows the whole bucket.")
    MAX_INPUT_BYTES = Setting("MAX_INPUT_BYTES", int, 1 << 30, "Largest input object a job may download, in bytes.", minimum=1)
    OUTPUT_URL_MODE = Setting("OUTPUT_URL_MODE", str, "signed",
        "What `output_url` holds: a signed URL, a public URL or the key.",
        choices=("signed", "public", "key"))
    SIGNED_URL_TTL = Setting("SIGNED_URL_TTL", int, 7 * 24 * 3600, "Seconds a signed result URL stays valid.", minimum=1)
    STORAGE_RETRY_TIMEOUT = Setting("STORAGE_RETRY_TIMEOUT", float, 60.0, "Seconds one storage call keeps retrying transient errors (5xx, throttling, resets).", minimum=0.0)
    # --- images and consumers ---
    MAX_IMAGE_HEIGHT = Setting("MAX_IMAGE_HEIGHT", int, 2048, "Largest image height in pixels (checked from the header).", minimum=1)
    MAX_IMAGE_WIDTH = Setting("MAX_IMAGE_WIDTH", int, 2048, "Largest image width in pixels (checked from the header).", minimum=1)
    MAX_IMAGE_FRAMES = Setting("MAX_IMAGE_FRAMES", int, 64, "Most frames/pages one image may have.", minimum=1)
    MIN_IMAGE_SIZE = Setting("MIN_IMAGE_SIZE", int, 8, "Smallest image height and width in pixels; smaller images fail as user errors.", minimum=1)
    SEGMENTATION_MODEL = Setting("SEGMENTATION_MODEL", str, "NuclearSegmentation:1", "Model `NAME:VERSION` used when a job names none.")
    MAX_ZIP_ENTRIES = Setting("MAX_ZIP_ENTRIES", int, 1000, "Most entries one uploaded zip may hold.", minimum=1)
    MAX_ZIP_BYTES = Setting("MAX_ZIP_BYTES", int, 4 << 30, "Most uncompressed bytes one uploaded zip may expand to.", minimum=1)
    MAX_ZIP_RATIO = Setting("MAX_ZIP_RATIO", float, 200.0, "Highest compression ratio an entry may have (zip-bomb guard).", minimum=1.0)
    JOB_LOG_LINES = Setting("JOB_LOG_LINES", int, 200, "Log lines kept per job in Redis for `redis-consumer logs`.", minimum=0)
    CLAIM_AHEAD = Setting("CLAIM_AHEAD", int, 0, "Jobs a worker may claim ahead of the one it runs while jobs are waiting and recent jobs are short (CLAIM_AHEAD_MAX_SECONDS): the next one starts while the last one's result is being written, hiding the Redis round trip when Redis is across a network (0, the default, claims one job at a time: on one host it costs more than it hides).", minimum=0)
    CLAIM_AHEAD_MAX_SECONDS = Setting("CLAIM_AHEAD_MAX_SECONDS", float, 0.01, "Claim ahead (or start batches) only while the recent jobs' mean wall time is below this many seconds (slow jobs leave waiting jobs to other workers).", minimum=0.0)
    CLAIM_BATCH = Setting("CLAIM_BATCH", int, 16, "Most jobs a worker starts with one script call while jobs are waiting and recent jobs are short (CLAIM_AHEAD_MAX_SECONDS); their results are written together with the next batch's starts, at most CLAIM_AHEAD_MAX_SECONDS late, and once a job of a batch has run 1 s the rest of its batch goes back to the queue. Saves Redis and worker time per short job (null jobs: 1.6-2x the throughput); ML jobs never batch. 1 starts one job at a time; above 1 replaces CLAIM_AHEAD.", minimum=1)
    STATUS_MIN_INTERVAL = Setting("STATUS_MIN_INTERVAL", float, 0.5, "Seconds a job's stage status or progress may wait before it is written (changes within it share one write; 0 writes each at once).", minimum=0.0)
    # --- kiosk job types (read by the mesmer, polaris and caliban consumers) ---
    NUCLEAR_MODEL = Setting("NUCLEAR_MODEL", str, "NuclearSegmentation:6",
        "Kiosk segmentation: model for the nuclear channel slot 0 (KRC settings.py:133).", check=_model)
    CYTOPLASM_MODEL = Setting("CYTOPLASM_MODEL", str, "CytoplasmSegmentation:5",
        "Kiosk segmentation: model for the cytoplasm channel slot 1 (KRC settings.py:134).", check=_model)
    PHASE_MODEL = Setting("PHASE_MODEL", str, "PhaseCytoSegmentation:0",
        "Kiosk segmentation: model for the phase channel slot 2 (KRC settings.py:135).", check=_model)
    SEGMENTATION_QUEUE = Setting("SEGMENTATION_QUEUE", str, "segmentation",
        "Kiosk name for the queue its caliban jobs push their frames to (KRC settings.py:86 defaults to "
        "`predict`; kiosk-console sets `segmentation`); accepted, unused: caliban segments its frames in-process.")
    MESMER_MODEL = Setting("MESMER_MODEL", str, "MultiplexSegmentation:9",
        "Mesmer (multiplex) whole-cell/nuclear model (KRC settings.py:121-122).",
        aliases=("MULTIPLEX_MODEL",), check=_model)
    MESMER_COMPARTMENT = Setting("MESMER_COMPARTMENT", str, "whole-cell",
        "Mesmer compartment when a job names none (KRC settings.py:123).",
        choices=("whole-cell", "nuclear", "both"))
    SEGMENTATION_POSTPROCESS = Setting("SEGMENTATION_POSTPROCESS", str, "",
        "Kiosk segmentation: deep-watershed parameters overriding the applications' (JSON, e.g. "
        '`{"radius": 8, "small_objects_threshold": 20}`; empty: DeepCell\'s).', check=_json_object)
    MESMER_POSTPROCESS = Setting("MESMER_POSTPROCESS", str, "",
        "Mesmer: deep-watershed parameters overriding the application's, for both compartments or per "
        'compartment (JSON, e.g. `{"nuclear": {"maxima_threshold": 0.2}}`; empty: DeepCell\'s).', check=_json_object)
    POLARIS_MODEL = Setting("POLARIS_MODEL", str, "SpotDetection:3",
        "Polaris spot-detection model (KRC settings.py:126).", check=_model)
    POLARIS_THRESHOLD = Setting("POLARIS_THRESHOLD", float, 0.95,
        "Polaris spot probability threshold (KRC settings.py:127).", check=_probability)
    POLARIS_CLIP = Setting("POLARIS_CLIP", bool, False,
        "Polaris: clip intensities to percentiles before normalising (KRC settings.py:128).")
    POLARIS_SCALE = Setting("POLARIS_SCALE", float, 0.38,
        "Polaris: resize factor for the segmentation of its nuclear/cytoplasm channels (KRC settings.py:129).",
        check=lambda v: None if 0.1 <= v <= 10.0 else "a number from 0.1 to 10")
    CALIBAN_MODEL = Setting("CALIBAN_MODEL", str, "NuclearTrackingInf:6",
        "Caliban tracking inference model (KRC settings.py:95-96).", aliases=("TRACKING_MODEL",), check=_model)
    NEIGHBORHOOD_ENCODER = Setting("NEIGHBORHOOD_ENCODER", str, "NuclearTrackingNE:6",
        "Caliban neighborhood-encoder model (KRC settings.py:97).", check=_model)
    TRACKING_SEGMENT_MODEL = Setting("TRACKING_SEGMENT_MODEL", str, "",
        "Model that segments a tracking job's frames (in-process, NuclearSegmentation application); empty: "
        "NUCLEAR_MODEL, as kiosk 0.9+ does (the kiosk tutorial's name, KRC settings.py:141 at "
        "f6707fa^, default `panoptic:3` then).", check=_model)
    MAX_DISTANCE = Setting("MAX_DISTANCE", int, 50,
        "Caliban: largest distance in pixels a cell may move between frames (KRC settings.py:100).", minimum=1)
    APPEARANCE_DIM = Setting("APPEARANCE_DIM", int, 32,
        "Caliban: size of the appearance crop per cell (KRC settings.py:105).", minimum=1)
    BIRTH = Setting("BIRTH", float, 0.99, "Caliban: birth probability (KRC settings.py:103).", check=_probability)
    DEATH = Setting("DEATH", float, 0.99, "Caliban: death probability (KRC settings.py:104).", check=_probability)
    DIVISION = Setting("DIVISION", float, 0.9, "Caliban: division probability (KRC settings.py:102).",
        check=_probability)
    TRACK_LENGTH = Setting("TRACK_LENGTH", int, 8,
        "Caliban: frames of history the tracker uses (KRC settings.py:101).", minimum=1)
    CROP_MODE = Setting("CROP_MODE", str, "resize", "Caliban: how cell crops are taken (KRC settings.py:106).",
        choices=("resize", "fixed"))
    NORMALIZE_TRACKING = Setting("NORMALIZE_TRACKING", bool, True,
        "Caliban: normalise frames before tracking (KRC settings.py:107 names it `CALIBAN_NORM`; "
        "`NORMALIZE_TRACKING` at f6707fa^:148).", aliases=("CALIBAN_NORM",))
    DRIFT_CORRECT_ENABLED = Setting("DRIFT_CORRECT_ENABLED", bool, False,
        "Caliban: correct stage drift between frames; accepted for kiosk configs, which removed it "
        "(KRC 1f1b1ea, settings.py:97 before it).")
    MAX_IMAGE_CHANNELS = Setting("MAX_IMAGE_CHANNELS", int, 16,
        "Most channels one image (or a job's `channels` list) may have; checked before decoding.", minimum=1)
    MAX_DECODED_BYTES = Setting("MAX_DECODED_BYTES", int, 1 << 30,
        "Most bytes an image may take once decoded (from the header, before decoding).", minimum=1)
    # --- observability ---
    LOG_LEVEL = Setting("LOG_LEVEL", str, "INFO",
        "Log level.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    LOG_FORMAT = Setting("LOG_FORMAT", str, "text",
        "`json` for one JSON object per line (clusters).",
        choices=("text", "json"))
    METRICS_PORT = Setting("METRICS_PORT", int, 9090, "Port of /metrics, /healthz and /readyz; 0 disables the server.", minimum=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, extra: Iterable[Setting] = (),
                 **overrides: Any) -> Settings:
        """Read every declared variable (and the plug-in settings `extra`); keyword overrides win."""
        extra_specs = tuple(s for s in specs_of(tuple(extra)) if s.name not in _BY_NAME)
        values = cls.read_values(environ, cls.specs() + extra_specs, overrides)
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
        return cls(values, extra_specs, os.environ if environ is None else environ)

    def for_consumer(self, consumer_cls: Any) -> Settings:
        """These settings plus the consumer class's own `settings_spec`, read and validated now.

        Called at worker start (a bad value: `ConfigError`, exit 2). Idempotent: settings that
        already hold those values are returned as they are.
        """
        specs = specs_of(getattr(consumer_cls, "settings_spec", ()))
        clash = [s.name for s in specs if s.name in _BY_NAME and s is not _BY_NAME[s.name]]
        if clash:
            raise ConfigError(f"{getattr(consumer_cls, '__name__', consumer_cls)} redeclares the core setting "
                              f"{clash[0]}; give its own setting another name")
        missing = [s for s in specs if s.name not in self._values]
        if not missing:
            return self
        env = os.environ if self._environ is None else self._environ
        values = dict(self._values)
        values.update(self.read_values(env, missing, {}))
        return Settings(values, self._extra_specs + tuple(missing), self._environ)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed."""
        unknown = set(changes) - set(self._values)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return Settings({**self._values, **changes}, self._extra_specs, self._environ)

    def public(self) -> dict[str, Any]:
        """Settings safe to log: secret values masked."""
        out = {}
        for s in self.all_specs():
            value = self._values[s.name]
            out[s.name] = "***" if s.secret and value else value
        return out

    def secret_values(self) -> list[str]:
        """Values that must never appear in logs (for the redaction filter)."""
        secrets = [self._values[s.name] for s in self.all_specs() if s.secret and self._values[s.name]]
        for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            if os.environ.get(var):
                secrets.append(os.environ[var])
        return secrets


SPECS: tuple[Setting, ...] = Settings.specs()
_BY_NAME = {s.name: s for s in SPECS}


def spec(name: str) -> Setting:
    """The declaration of one core variable."""
    return _BY_NAME[name]


def markdown_table(consumers: Mapping[str, Iterable[Setting]] | None = None) -> str:
    """The README's configuration table; then one table per consumer type with its own settings."""
    parts = [_table(SPECS)]
    for name, specs in (consumers or {}).items():
        specs = specs_of(specs)
        if specs:
            parts.append(f"Settings of the `{name}` consumer (its `settings_spec`):\n\n{_table(specs)}")
    return "\n\n".join(parts)
