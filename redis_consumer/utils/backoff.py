"""Capped exponential backoff with full jitter (sleep = uniform(0, min(cap, base * 2**n)))."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based)."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return (rng or random).uniform(0.0, max(ceiling, 0.0))


class Backoff:
    """Stateful helper: `next()` gives the next delay, `reset()` after a success."""

    def __init__(self, base: float = 0.1, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        delay = full_jitter(self.attempt, self.base, self.cap)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
