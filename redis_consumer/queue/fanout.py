"""Zip fan-out / fan-in bookkeeping in Redis, as methods of the `Broker` (a mixin).

Fan-out records the parent's child list (one atomic step) and creates each child only if its
key does not exist (a retried fan-out makes no duplicates). The fan-in count itself lives in the
Lua steps that end a child (`lua/child_ended.lua`); this class reads the children's states back
and lets them expire with the parent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import keys

#: Child hashes read per pipelined round trip.
READ_CHUNK = 500


class FanOut:
    """Needs `self.redis`, `self.expire_time` and the `_fanout`, `_set_children`, `_expire_children` scripts."""

    redis: Any
    expire_time: int

    def create_children(
        self,
        parent_key: str,
        child_queue: str,
        common: Mapping[str, str],
        children: Sequence[tuple[str, str, str]],
        batch: int = 200,
    ) -> int:
        """Record the child list, then create and LPUSH each child (key, input_file_name,
        original_name) with the `common` fields unless it exists; returns how many are new."""
        self._set_children(keys=[keys.children(parent_key)], args=[c[0] for c in children])
        flat_common = [x for pair in common.items() for x in pair]
        created = 0
        for start in range(0, len(children), batch):
            args: list[str] = [str(len(common)), *flat_common]
            for key, input_key, original in children[start:start + batch]:
                args += [key, input_key, original]
            created += int(self._fanout(keys=[child_queue], args=args))
        return created

    def child_keys(self, parent_key: str) -> list[str]:
        """A parent's child keys, in archive order."""
        return self.redis.lrange(keys.children(parent_key), 0, -1)

    def child_count(self, parent_key: str) -> int:
        return int(self.redis.llen(keys.children(parent_key)))

    def child_fields(self, child_keys: Sequence[str], names: Sequence[str]) -> list[dict[str, str | None]]:
        """`names` of every child hash (None where absent), in order, one round trip per 500."""
        out: list[dict[str, str | None]] = []
        for start in range(0, len(child_keys), READ_CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for key in child_keys[start:start + READ_CHUNK]:
                pipe.hmget(key, list(names))
            out.extend(dict(zip(names, values)) for values in pipe.execute())
        return out

    def expire_children(self, parent_key: str) -> int:
        """Children, their logs and the child list get the parent's `EXPIRE_TIME`."""
        return int(self._expire_children(keys=[keys.children(parent_key)], args=[self.expire_time, keys.job_log("")]))
