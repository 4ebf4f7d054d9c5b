"""Consumers that misbehave on purpose, loaded by workers as `CONSUMER_TYPE=tests.consumers_for_tests:Name`.

Each records what it did in Redis (`test:executions:{key}` counter, `test:order` list), so tests
can tell executions (at-least-once) from results (exactly one final write). The recording goes
through a client of their own: a consumer is given no Redis client.
"""

from __future__ import annotations

import os
import signal
import time

from redis_consumer.consumers import Consumer, TransientError, UserError
from redis_consumer.queue import connect


class OwnRedisClient:
    """Mixin for test and bench consumers that keep counters in Redis: their own client, opened on
    first use (a consumer is given no Redis client by the worker)."""

    _recorder = None

    @property
    def redis(self):
        if self._recorder is None:
            self._recorder = connect(self.settings)
        return self._recorder


class RecordingConsumer(OwnRedisClient, Consumer):
    """Records the order of jobs and how often each ran; honours a few hash fields:
    `sleep` (seconds), `sleep_attempts` (only sleep while attempts <= this), `poison` (SIGKILL self),
    `user_error` (raise UserError), `transient` (raise TransientError), `crash` (raise ValueError)."""

    name = "recording"

    def _consume(self, redis_hash):
        fields = self.job.fields
        self.redis.incr(f"test:executions:{redis_hash}")
        self.redis.rpush("test:order", redis_hash)
        if fields.get("poison"):
            os.kill(os.getpid(), signal.SIGKILL)
        if fields.get("user_error"):
            raise UserError(fields["user_error"])
        if fields.get("transient"):
            raise TransientError(fields["transient"])
        if fields.get("crash"):
            raise ValueError(fields["crash"])
        sleep = float(fields.get("sleep") or 0)
        only_until = int(fields.get("sleep_attempts") or 10**6)
        if sleep and self.job.attempts <= only_until:
            with self.stage("predict"):
                deadline = time.monotonic() + sleep
                while time.monotonic() < deadline:
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        self.redis.incr(f"test:results:{redis_hash}")
        return {"output_url": f"result-of-{redis_hash}", "worker": self.job.consumer_id}


class StrictConsumer(RecordingConsumer):
    """Requires an `input_file_name` field, like the model consumers."""

    required_fields = ("input_file_name",)


class SwallowingConsumer(RecordingConsumer):
    """Swallows every `Exception` in an endless loop while `swallow` is set: only a JobTimeout that
    is not an `Exception` can end it."""

    def consume(self, job):
        if not job.fields.get("swallow"):
            return super().consume(job)
        self.redis.incr(f"test:executions:{job.key}")
        while True:
            try:
                time.sleep(0.01)
            except Exception:  # noqa: BLE001, S110 - the point of the test
                pass


class IdentityModelConsumer(Consumer):
    """Sends a small image through the TF client's `predict` (model `model_name`, default
    Identity:1) and returns its sum: the least a model consumer does, independent of the real ones."""

    name = "identity-model"
    uses_tfserving = True

    def consume(self, job):
        import numpy as np

        model = job.fields.get("model_name") or "Identity"
        version = int(job.fields.get("model_version") or 1)
        image = np.full((1, 8, 8, 1), 2.0, np.float32)
        out = self.services.tf.predict(model, version, {"image": image}, deadline=self.check_deadline())
        return {"output_url": f"identity:{float(np.sum(out['output'])):g}"}
