"""Issue 15 item 2: a long job field can neither hang a worker nor bloat a reason.

`logs.scrub` must stay linear on hostile text (the old regexes backtracked quadratically: 100 KB
took ~90 s holding the GIL), every user value quoted in a reason is capped by `errors.quote`, and
a 10 MB `model_name` is a user error, not two system retries. The end-to-end tests use a real
worker process, a real redis-server and the dev model server.
"""

from __future__ import annotations

import re
import time
import uuid

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_consumer import logs
from redis_consumer.errors import one_sentence, quote
from tests.helpers.chaos_procs import WorkerProcess, submit, worker_env
from tests.helpers.model_server import ModelServer
from tests.helpers.net import wait_final

# The regexes scrub() used before (kept here as the oracle of what it must still redact).
OLD_SIGNED_QUERY = re.compile(
    r"(https?://[^\s?\"']+)\?[^\s\"']*(?:Signature|X-Amz-|X-Goog-|GoogleAccessId|Expires|sig=)[^\s\"']*",
    re.IGNORECASE)
OLD_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://([^:/@\s]*):([^@\s]+)@")


def old_scrub(text: str) -> str:
    text = OLD_SIGNED_QUERY.sub(r"\1?<signature-redacted>", text)
    return OLD_URL_PASSWORD.sub(r"\1://\2:***@", text)


PIECES = ["http://", "https://", "HTTP://", "://", "s3://", "redis://", "?", "@", ":", "/", " ", "\t", "'", '"',
          "a", "Z", "7", "+", ".", "-", "é", "Signature=", "X-Amz-", "x-goog-", "sig=", "Expires", "u:p@", "h/p"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=16))
def test_scrub_redacts_exactly_what_the_old_regexes_did(pieces):
    text = "".join(pieces)
    assert logs.scrub(text) == old_scrub(text)


HOSTILE = {
    "letters": "a",                    # the 200 KB `scale`: the old scheme regex retried at every letter
    "urls without signature": "http://a?",
    "user:pass without @": "a://u:",
    "empty url parts": "http://?",
    "mixed": "x://a:b:http://c?d",
    "signed": "https://h/p?X-Amz-",
}


def _best_time(text: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        logs.scrub(text)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("unit", HOSTILE.values(), ids=list(HOSTILE))
def test_scrub_is_linear_on_a_megabyte_of_hostile_text(unit):
    """100x the input costs ~100x the time when linear, ~10,000x when quadratic; the bound is 500x.

    Both sizes are measured in the same run (best of 3), so the bound is relative to this
    machine's speed, with room for a busy shared machine; no absolute time is asserted.
    """
    small = (unit * (10_000 // len(unit) + 1))[:10_000]
    large = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    baseline = max(_best_time(small), 1e-4)  # below 0.1 ms the clock's noise dominates
    assert _best_time(large) / baseline < 500


def test_quote_caps_any_user_value():
    assert quote("abc") == repr("abc") and quote(3) == "3"
    long = quote("x" * 10_000_000)
    assert len(long) <= 84 and long.startswith("'xxx") and long.endswith("…'")
    assert len(quote(list(range(12_000)))) <= 80
    assert len(one_sentence("word " * 2_000_000)) <= 400


@pytest.fixture(scope="module")
def stack(redis_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("long-fields")
    bucket = base / "bucket"
    (bucket / "uploads").mkdir(parents=True)
    tifffile.imwrite(bucket / "uploads" / "good.tif", (np.arange(64 * 64, dtype=np.uint16) % 4000).reshape(64, 64))
    model = ModelServer().start()
    client = redis_server.client()
    client.flushall()
    env = worker_env(REDIS_URL=redis_server.url, QUEUE="long", CONSUMER_TYPE="segmentation",
                     STORAGE_BUCKET=f"file://{bucket}", OUTPUT_URL_MODE="key", TF_HOST="127.0.0.1",
                     TF_PORT=str(model.port), MAX_ATTEMPTS="2", MAX_RETRY="1", GRPC_BACKOFF="0.1",
                     RETRY_BACKOFF_CAP="0.2", JOB_TIMEOUT="60")
    worker = WorkerProcess(env, log_dir=str(base), name="long-worker").start()
    yield {"client": client, "worker": worker}
    worker.terminate(30)
    model.stop()


def _job(client, **fields) -> str:
    base = {"input_file_name": "uploads/good.tif", "original_name": "good.tif",
            "model_name": "NuclearSegmentation", "model_version": "1"}
    return submit(client, "long", key=f"long:good.tif:{uuid.uuid4().hex}", **{**base, **fields})


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fields,words", [
    ({"scale": "9" * 200_000}, "scale field must be a number"),
    ({"scale": "a" * 200_000}, "scale field must be a number"),
    ({"channels": "0," * 100_000 + "x"}, "channels field"),
    ({"dimension_order": "YX" * 100_000}, "dimension_order"),
    ({"model_name": "M" * 10_000_000}, "model name is too long"),
    ({"model_version": "1" * 1_000_000}, "model version is too long"),
], ids=["scale-digits", "scale-letters", "channels", "dimension_order", "model_name-10MB", "model_version"])
def test_a_huge_field_fails_the_job_with_a_short_reason_and_the_next_job_finishes(stack, fields, words):
    client, worker = stack["client"], stack["worker"]
    bad = _job(client, **fields)
    job = wait_final(client, bad, timeout=60)
    assert job["status"] == "failed" and job["failure_type"] == "user", {k: v[:200] for k, v in job.items()}
    assert words in job["reason"] and len(job["reason"]) <= 400 and "\n" not in job["reason"]
    assert job.get("attempts") == "1"  # a user error, not system retries
    good = _job(client)
    assert wait_final(client, good, timeout=60)["status"] == "done"
    assert worker.alive()
