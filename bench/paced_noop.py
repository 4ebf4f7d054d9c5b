"""A bench-only consumer: the null consumer's work (none) after sleeping `sleep_seconds` (a job field).

Why: Redis spends more CPU per command when it wakes from idle between slow jobs (cold caches) than
when null jobs run back to back, so a segmentation job's Redis cost is also compared with null jobs
paced like it (`bench_redis_capacity.py`: `noop_paced`). Loaded as CONSUMER_TYPE=paced_noop:PacedNoopConsumer
with bench/ on PYTHONPATH.
"""

from __future__ import annotations

import time
from typing import Any

from redis_consumer.consumers.base import Consumer, Job


class PacedNoopConsumer(Consumer):
    """Sleeps the job's `sleep_seconds` (0 when missing or not a number), writes nothing else."""

    name = "paced_noop"

    def consume(self, job: Job) -> dict[str, Any]:
        try:
            seconds = max(0.0, min(float(job.fields.get("sleep_seconds", 0)), 10.0))
        except ValueError:
            seconds = 0.0
        time.sleep(seconds)
        return {"output_url": "", "output_file_name": ""}
