"""Redis key names of the job protocol (see DESIGN.md "Redis keys"). Kiosk-shaped, no hash tags."""

from __future__ import annotations

QUEUES_SET = "queues"
FINAL_STATUSES = ("done", "failed")


def zip_queue(queue: str) -> str:
    """Archives waiting to be fanned out into `queue` jobs."""
    return f"{queue}-zip"


def processing(queue: str, consumer_id: str) -> str:
    """Jobs claimed by one live worker."""
    return f"processing-{queue}:{consumer_id}"


def processing_prefix(queue: str) -> str:
    return f"processing-{queue}:"


def consumers(queue: str) -> str:
    """Sorted set of worker ids scored by heartbeat expiry (unix seconds)."""
    return f"consumers:{queue}"


def dead(queue: str) -> str:
    """Jobs that exhausted their attempts."""
    return f"dead-{queue}"


def reaper_lock(queue: str) -> str:
    return f"reaper-lock:{queue}"


def job_log(job_key: str) -> str:
    """Capped list of one job's log lines, expiring with the job."""
    return f"logs:{job_key}"


def children(job_key: str) -> str:
    """Redis list of a zip parent's child keys, in archive order."""
    return f"children:{job_key}"


def completed_counter(queue: str) -> str:
    """Counter of jobs finished on a queue (for jobs-per-minute in `watch`)."""
    return f"stats:{queue}:finished"
