"""The producer's side of the protocol: create a job hash and enqueue it, exactly once.

`enqueue` runs `lua/enqueue.lua` (through the broker's script loader): a retry after a lost
reply can neither reset a finished job nor queue it twice.
"""

from __future__ import annotations

import redis

from .broker import enqueue

__all__ = ["confirm_replicated", "enqueue"]


def confirm_replicated(client: redis.Redis, timeout_ms: int = 1000) -> bool | None:
    """Wait until a replica holds our writes (`WAIT 1`), so a failover cannot lose a submission.

    Returns None when the primary has no replica (nothing to wait for), else whether one
    acknowledged within `timeout_ms`.
    """
    replicas = int(client.info("replication").get("connected_slaves", 0) or 0)
    if replicas == 0:
        return None
    return int(client.execute_command("WAIT", 1, timeout_ms)) >= 1


