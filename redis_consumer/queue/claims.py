"""What a claim hands the worker: the job as the queue sees it, and why a claim found none.

Its own module so the broker and its claim-ahead mixin both use these types without importing
each other.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

DEAD_REASON = (
    "The job was abandoned {n} times because the worker processing it stopped responding "
    "(crash or out-of-memory); check the input's size and content before resubmitting."
)


@functools.lru_cache(maxsize=8)
def dead_reason(max_attempts: int) -> str:
    """`DEAD_REASON` for `max_attempts` (made once, not per claim)."""
    return DEAD_REASON.format(n=max_attempts)


@dataclass
class Claim:
    """One claimed job as the queue sees it: key, fencing token, attempts, fields and deadline.

    `unreadable` names the fields whose bytes are not UTF-8 (their values here are decoded with
    replacement characters); the worker fails such a job as bad input.
    """

    key: str
    token: str
    attempts: int
    previous_status: str
    fields: dict[str, str] = field(default_factory=dict)
    claimed_at: float = field(default_factory=time.monotonic)
    deadline: float = float("inf")
    unreadable: list[str] = field(default_factory=list)

    def time_left(self) -> float:
        """Seconds before the job's deadline (may be negative)."""
        return self.deadline - time.monotonic()


#: Older name of `Claim` (kept for code written against it).
Job = Claim


@dataclass(frozen=True)
class ClaimResult:
    """What the claim step found: `ok` gives a Claim; the others say why there is none.

    outcome: ok | missing | wrongtype | final | dead (attempts used up) | unreadable (bad key)
    """

    outcome: str
    key: str
    job: Claim | None = None
    detail: str = ""

    @property
    def claim(self) -> Claim | None:
        return self.job
