"""Claiming ahead, as methods of the `Broker` (a mixin): the job after next rides on a final write.

While jobs wait and recent jobs are short, a job's final write (`finish_claim.lua`) also claims
the next job *ahead*: it moves into our processing list and its fields are read, but it is not
started (no token, no attempt counted). The next final write starts it. When its fields say the
claim step will start it (a hash, not final, attempts left), that final write is sent and its
reply read only at our next call, so the worker runs the held job while Redis writes the last
result: Python and Redis overlap instead of taking turns. See docs/queue-protocol.md ("Claiming
ahead") for the attempts rule after a SIGKILL and the graceful exits.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import deque
from typing import Any

from .claims import ClaimResult
from .fields import _decode_fields, _text

log = logging.getLogger(__name__)

#: fan-in counters (the claim step drops one that is not an integer) and how a counted `attempts` reads
_COUNTERS = ("children_total", "children_done", "children_failed")
_COUNTED = re.compile(r"-?[1-9][0-9]*\Z")
_DIGITS = re.compile(r"[0-9]+\Z")


class ClaimAhead:
    """Needs the broker's claim helpers (`_claim_args`, `_claim_result`, `_started`), its
    `_finish_claim` script, `_prefetched`, `_held`, `_recent` and the `claim_ahead*` limits."""

    _held: deque[tuple[bytes, list[bytes] | None]]
    _prefetched: ClaimResult | None
    _recent: float
    _job_timeout: float
    claim_ahead: int
    claim_ahead_max_seconds: float
    max_attempts: int
    _finish_claim: Any
    _claim_args: Any
    _claim_result: Any
    _started: Any
    _give_back_quietly: Any

    def _finish_and_claim(self, finish_keys: list[Any], finish_args: list[Any]) -> int:
        """The final write and the next claim in one script call (`finish_claim.lua`).

        The next job is the oldest one held ahead, else the oldest waiting one. When a held job
        can be started for sure (its fields, read when it was held, pass every check of the claim
        step), the call is sent and its reply read only at our next call (`Lane.settle`): the
        worker runs that job meanwhile, so Python and Redis overlap. Returns the finish's reply
        (1 when it is still in flight: a stale one is logged when its reply is read).
        """
        held = self._held.popleft() if self._held else None
        claim_keys, claim_args = self._claim_args(held[0] if held is not None else "")
        ahead = self.claim_ahead - len(self._held) if self._recent < self.claim_ahead_max_seconds else 0
        sure = self._sure_start(held, claim_args) if held is not None else None
        command_keys = [*claim_keys, *finish_keys]
        command_args = [*claim_args, max(0, ahead), "" if sure is None else "1", *finish_args]
        if sure is not None:
            self._prefetched = sure
            self._finish_claim.defer(command_keys, command_args,
                                     functools.partial(self._settled, finish_keys[0], held, claim_args))
            return 1
        finished, claimed, holds = self._finish_claim(keys=command_keys, args=command_args, raw=True)
        self._hold(holds)
        if not claimed:  # the claim step failed: whatever it moved into our list goes back
            self._give_back_quietly()
        else:
            result = self._claim_result(claimed, claim_args, self._job_timeout, held[1] if held else None)
            if result is not None:
                self._prefetched = result
        return int(finished)

    def _sure_start(self, held: tuple[bytes, list[bytes] | None], args: list[Any]) -> ClaimResult | None:
        """The claim the claim step will make of a held job, when its fields as read at hold
        time say it will be `ok` (a hash, not final, attempts left, fan-in counters integers);
        None when the step must decide (the caller then waits for its reply)."""
        raw_key, flat = held
        if not flat:
            return None
        try:
            key = raw_key.decode("utf-8")
        except UnicodeDecodeError:
            return None
        decoded = _decode_fields(flat)
        data = decoded[0]
        status = data.get("status", "")
        if status in ("done", "failed") or any(not _DIGITS.match(data[n]) for n in _COUNTERS if n in data):
            return None
        raw = data.get("attempts")
        attempts = max(1, int(raw) + 1) if raw is not None and (raw == "0" or _COUNTED.match(raw)) else 1
        if attempts > self.max_attempts:
            return None
        return self._started(key, args[0], args[2], attempts, status, decoded, [], self._job_timeout)

    def _settled(self, job_key: str, held: tuple[bytes, list[bytes] | None], args: list[Any], reply: Any) -> None:
        """The reply of a final write sent ahead (see `_finish_and_claim`)."""
        finished, claimed, holds = reply
        self._hold(holds)
        if int(finished) <= 0:
            log.warning("%s finished, but %s; result discarded", job_key,
                        "it vanished" if int(finished) < 0 else "a newer claim owns it")
        if not claimed:
            log.warning("%s: the claim step failed on it; handed back", _text(held[0]))
            self._give_back_quietly()
        elif claimed[0] != b"ok":  # its run here writes nothing: every write is fenced by the claim token
            log.warning("%s: held job not started (%s); its run here is discarded", _text(held[0]), _text(claimed[0]))

    def _hold(self, holds: list[Any]) -> None:
        """Keep the jobs a final write claimed ahead (key, fields), oldest first."""
        for i in range(0, len(holds), 2):
            self._held.append((holds[i], holds[i + 1]))
