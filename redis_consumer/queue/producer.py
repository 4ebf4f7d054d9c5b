"""The producer's side of the protocol: create a job hash and enqueue it, exactly once.

A plain `HSET` + `LPUSH` (what the kiosk frontend does) is not safe to retry: if the reply is
lost and the client retries, the second `HSET` can reset a job a worker already finished back to
`new`, and the second `LPUSH` queues it twice. This script creates the hash and pushes the key
only when the key does not exist yet, so a retry is a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

# KEYS: job, queue
# ARGV: field1, value1, ...
# -> 1 created and queued, 0 already existed (nothing changed)
ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
redis.call('LPUSH', KEYS[2], KEYS[1])
return 1
"""


def enqueue(client: redis.Redis, queue: str, key: str, fields: Mapping[str, str]) -> bool:
    """Create job `key` with `fields` and LPUSH it onto `queue`; False if the key already existed."""
    flat: list[str] = []
    for name, value in fields.items():
        flat += [name, str(value)]
    return bool(client.register_script(ENQUEUE)(keys=[key, queue], args=flat))


def confirm_replicated(client: redis.Redis, timeout_ms: int = 1000) -> bool | None:
    """Wait until a replica holds our writes (`WAIT 1`), so a failover cannot lose a submission.

    Returns None when the primary has no replica (nothing to wait for), else whether one
    acknowledged within `timeout_ms`.
    """
    replicas = int(client.info("replication").get("connected_slaves", 0) or 0)
    if replicas == 0:
        return None
    return int(client.execute_command("WAIT", 1, timeout_ms)) >= 1
