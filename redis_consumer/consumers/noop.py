"""A consumer that does no work: marks each job `done`.

Useful to smoke-test a deployment's queue plumbing and to measure the queue's own overhead
(the null-consumer benchmark).
"""

from __future__ import annotations

from typing import Any

from .base import Consumer, Job


class NoopConsumer(Consumer):
    """Finishes every valid job at once with `output_url` empty."""

    name = "noop"

    def consume(self, job: Job) -> dict[str, Any]:
        return {"output_url": "", "output_file_name": ""}
