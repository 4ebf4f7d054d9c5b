"""The Kubernetes HPA's replica arithmetic, as the fleet simulator applies it.

Why a module of its own: the simulator runs three rule sets (ours, the kiosk's, a fixed fleet)
through the same controller, and the controller is the part worth reading against the
Kubernetes documentation (autoscaling/v2 "Algorithm details", "Stabilization window",
"Scaling policies"): desired = ceil(current x metric / target) unless the ratio is within the
tolerance (0.1); the recommendation is the max (scale-down) or min (scale-up) over the
stabilisation window; each change is limited by the policies over their periods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TOLERANCE = 0.1


def ratio_desired(current: int, ratio: float, tolerance: float = TOLERANCE) -> int:
    """desired = ceil(current x ratio), or current when |ratio - 1| <= tolerance."""
    if current == 0:
        return math.ceil(ratio) if ratio > 0 else 0
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio - 1e-9)


def average_value_desired(current: int, total: float, target: float, tolerance: float = TOLERANCE) -> int:
    """An AverageValue target: the ratio is (total / current) / target."""
    if current == 0:
        return math.ceil(total / target - 1e-9) if total > 0 else 0
    return ratio_desired(current, total / (target * current), tolerance)


@dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: float
    period_s: float


@dataclass
class Behavior:
    up_window_s: float = 0.0
    down_window_s: float = 300.0
    up: tuple[Policy, ...] = (Policy("Percent", 100, 15), Policy("Pods", 4, 15))  # Kubernetes' default
    down: tuple[Policy, ...] = (Policy("Percent", 100, 15),)
    up_select: str = "Max"
    down_select: str = "Min"


@dataclass
class Hpa:
    """One HPA: feed it the raw desired count every sync; it returns the replicas to set."""

    min_replicas: int
    max_replicas: int
    behavior: Behavior = field(default_factory=Behavior)
    _recs: list[tuple[float, int]] = field(default_factory=list)
    _changes: list[tuple[float, int, int]] = field(default_factory=list)  # (time, before, after)

    def _stabilised(self, now: float, desired: int, current: int) -> int:
        self._recs.append((now, desired))
        keep = max(self.behavior.up_window_s, self.behavior.down_window_s)
        self._recs = [(t, d) for t, d in self._recs if now - t <= keep]
        if desired > current:  # scale up: the lowest recommendation in the up window
            return max(current, min(d for t, d in self._recs if now - t <= self.behavior.up_window_s))
        # scale down: the highest recommendation in the down window
        return min(current, max(d for t, d in self._recs if now - t <= self.behavior.down_window_s))

    def _start_of_period(self, now: float, current: int, period: float) -> int:
        """Replicas at the start of the policy period: current - added + deleted since (as the
        controller's getReplicasChangePerPeriod does)."""
        return current - sum(after - before for t, before, after in self._changes if now - t < period)

    def _limited(self, now: float, desired: int, current: int) -> int:
        b = self.behavior
        if desired > current:
            limits = []
            for p in b.up:
                base = self._start_of_period(now, current, p.period_s)
                limits.append(base + p.value if p.kind == "Pods" else math.ceil(base * (1 + p.value / 100)))
            limit = max(limits) if b.up_select == "Max" else min(limits)
            return min(desired, max(limit, current))
        if desired < current:
            limits = []
            for p in b.down:
                base = self._start_of_period(now, current, p.period_s)
                limits.append(base - p.value if p.kind == "Pods" else int(base * (1 - p.value / 100)))
            # Min selects the policy allowing the smallest change: the highest floor
            limit = max(limits) if b.down_select == "Min" else min(limits)
            return max(desired, min(limit, current))
        return current

    def step(self, now: float, current: int, raw_desired: int) -> int:
        desired = max(self.min_replicas, min(self.max_replicas, raw_desired))
        desired = self._stabilised(now, desired, current)
        new = self._limited(now, desired, current)
        if new != current:
            self._changes.append((now, current, new))
            period = max([p.period_s for p in self.behavior.up + self.behavior.down] + [0])
            self._changes = [c for c in self._changes if now - c[0] < period]
        return new
