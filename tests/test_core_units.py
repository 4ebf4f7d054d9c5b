"""Fast unit tests of settings, log redaction, backoff, the registry and the Consumer contract."""

from __future__ import annotations

import io
import json
import logging
import sys
import time

import pytest

from redis_consumer import logs
from redis_consumer.consumers import registry
from redis_consumer.consumers.base import Consumer
from redis_consumer.errors import ConfigError, one_sentence
from redis_consumer.queue.broker import Broker
from redis_consumer.settings import SPECS, Settings, markdown_table
from redis_consumer.utils.backoff import Backoff, full_jitter
from redis_consumer.worker import Worker


def test_defaults_match_the_kiosk_names():
    s = Settings.from_env({})
    assert (s.QUEUE, s.REDIS_PORT, s.TF_PORT, s.MAX_ATTEMPTS) == ("segmentation", 6379, 8500, 3)
    assert s.HEARTBEAT_TTL > s.HEARTBEAT_INTERVAL
    assert s.HOSTNAME  # falls back to the host name


@pytest.mark.parametrize(
    "env,message",
    [
        ({"REDIS_PORT": "abc"}, "REDIS_PORT must be a whole number, got 'abc'"),
        ({"MAX_ATTEMPTS": "-1"}, "MAX_ATTEMPTS must be at least 1"),
        ({"GRPC_TIMEOUT": "nan"}, "GRPC_TIMEOUT must be a number"),
        ({"ALLOW_ROOT": "maybe"}, "ALLOW_ROOT must be true or false"),
        ({"OUTPUT_URL_MODE": "ftp"}, "OUTPUT_URL_MODE must be one of signed, public, key"),
        ({"HEARTBEAT_INTERVAL": "10", "HEARTBEAT_TTL": "5"}, "HEARTBEAT_TTL must be larger than HEARTBEAT_INTERVAL"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_values_are_parsed_to_types():
    s = Settings.from_env({"REDIS_PORT": " 26379 ", "LOG_FORMAT": "JSON", "ALLOW_ROOT": "yes",
                           "ALLOWED_INPUT_PREFIXES": "uploads/, lab-a/"})
    assert s.REDIS_PORT == 26379 and s.LOG_FORMAT == "json" and s.ALLOW_ROOT is True
    assert s.ALLOWED_INPUT_PREFIXES == ("uploads/", "lab-a/")


def test_secrets_are_masked_in_public_view_and_table_lists_everything():
    s = Settings.from_env({"REDIS_URL": "redis://:hunter22@redis:6379/0", "AWS_SECRET_ACCESS_KEY": "abcd1234secret"})
    public = s.public()
    assert public["REDIS_URL"] == "***" and public["AWS_SECRET_ACCESS_KEY"] == "***"
    assert "hunter22" not in json.dumps(public, default=str)
    table = markdown_table()
    for spec in SPECS:
        assert f"`{spec.name}`" in table


def test_scrub_removes_signatures_passwords_and_secrets():
    text = ("GET https://bucket.s3.amazonaws.com/out.zip?X-Amz-Algorithm=AWS4&X-Amz-Signature=deadbeef done; "
            "redis://:hunter22@redis:6379 and key abcd1234secret")
    clean = logs.scrub(text + " postgres://admin:hunter2@db:5432/x", ["abcd1234secret"])
    assert "hunter2" not in clean and "postgres://admin:***@db" in clean
    assert "deadbeef" not in clean and "hunter22" not in clean and "abcd1234secret" not in clean
    assert "https://bucket.s3.amazonaws.com/out.zip" in clean


def test_json_logs_are_one_line_and_redacted():
    stream = io.StringIO()
    logs.configure("INFO", "json", ["s3cr3t-value"], stream=stream)
    try:
        logging.getLogger("t").info("token s3cr3t-value\nsecond line", extra={"job": "q:1"})
        try:
            raise ValueError("boom s3cr3t-value")
        except ValueError:
            logging.getLogger("t").exception("failed")
    finally:
        logs.configure("WARNING", "text", [], stream=sys.stderr)
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["job"] == "q:1" and first["level"] == "INFO" and "s3cr3t-value" not in first["message"]
    assert "ValueError" in second["message"] and "s3cr3t-value" not in second["message"]


def test_full_jitter_is_capped_and_grows():
    assert all(0 <= full_jitter(n, 0.1, 2.0) <= 2.0 for n in range(50))
    b = Backoff(base=1.0, cap=1000)
    ceilings = [min(1000, 2**n) for n in range(5)]
    assert all(b.next() <= c for c in ceilings)
    b.reset()
    assert b.attempt == 0


def test_registry_lists_builtins_and_rejects_unknown():
    assert "noop" in registry.available()
    with pytest.raises(ConfigError) as err:
        registry.load("definitely-not-a-consumer")
    assert "noop" in str(err.value)
    assert registry.load("tests.consumers_for_tests:RecordingConsumer").__name__ == "RecordingConsumer"
    with pytest.raises(ConfigError):
        registry.load("json:dumps")  # importable, but not a Consumer


def test_registry_finds_entry_point_plugins(tmp_path, monkeypatch):
    """A separately installed package adds a CONSUMER_TYPE through the entry-point group."""
    pkg = tmp_path / "acme_consumer.py"
    pkg.write_text(
        "from redis_consumer.consumers import Consumer\n"
        "class AcmeConsumer(Consumer):\n"
        "    name = 'acme'\n"
        "    def _consume(self, redis_hash):\n"
        "        return {'output_url': 'acme'}\n"
    )
    dist = tmp_path / "acme_consumer-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-consumer\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[redis_consumer.consumers]\nacme = acme_consumer:AcmeConsumer\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "acme" in registry.available()
    assert registry.load("acme").__name__ == "AcmeConsumer"


class _SlowConsumer(Consumer):
    def _consume(self, redis_hash):
        end = time.monotonic() + 30
        while time.monotonic() < end:
            time.sleep(0.01)
        return {}


def test_job_timeout_fails_over_to_retry(rds, redis_server):
    """A job past JOB_TIMEOUT is interrupted and retried, then failed as a system error."""
    settings = Settings.from_env({}, REDIS_URL=redis_server.url, QUEUE="q", JOB_TIMEOUT=1.0, MAX_ATTEMPTS=1,
                                 HEARTBEAT_INTERVAL=0.2, HEARTBEAT_TTL=5.0, EMPTY_QUEUE_TIMEOUT=0.2)
    rds.hset("q:slow", mapping={"status": "new"})
    rds.lpush("q", "q:slow")
    worker = Worker(settings, _SlowConsumer)
    worker._supervisor.start()
    started = time.monotonic()
    outcome = worker._step()
    worker.stopping.set()
    assert outcome == "dead"
    assert time.monotonic() - started < 25  # interrupted, not run to its 30 s end
    data = rds.hgetall("q:slow")
    assert data["status"] == "failed" and data["failure_type"] == "system"
    assert "JOB_TIMEOUT" in data["reason"]


def test_finish_carries_job_log_lines(rds):
    rds.hset("q:l", mapping={"status": "new"})
    rds.lpush("q", "q:l")
    b = Broker(rds, "q", "w", log_lines=2)
    job = b.claim_next(1).job
    assert b.finish(job, "done", {}, log_lines=["a", "b", "c"]) == 1
    assert rds.lrange("logs:q:l", 0, -1) == ["b", "c"]
    assert 0 < rds.ttl("logs:q:l") <= 3600


def test_one_sentence_flattens_and_bounds():
    assert one_sentence("a\n  b\tc") == "a b c"
    assert len(one_sentence("x" * 1000)) == 400
