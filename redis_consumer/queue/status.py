"""The words the job protocol writes into `status` and `failure_type` (kiosk-compatible).

`str`-valued enums: `Status.DONE == "done"`, and Redis, the kiosk frontend and the Lua scripts
see exactly the same words.
"""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    def __str__(self) -> str:  # f"{Status.DONE}" is "done", not "Status.DONE"
        return self.value


class Status(_Word):
    """A job's `status` field."""

    NEW = "new"
    STARTED = "started"
    DOWNLOADING = "downloading"
    PRE_PROCESSING = "pre-processing"
    PREDICTING = "predicting"
    POST_PROCESSING = "post-processing"
    SAVING_RESULTS = "saving-results"
    UPLOADING = "uploading"
    WAITING = "waiting"  # a zip parent waiting for its children
    DONE = "done"
    FAILED = "failed"


class FailureType(_Word):
    """A failed job's `failure_type`: `user` = bad input (not retried), `system` = infrastructure."""

    USER = "user"
    SYSTEM = "system"


#: Final statuses: a worker that meets one drops the job without redoing it.
FINAL = frozenset({Status.DONE, Status.FAILED})
#: Statuses a job may have when it is claimed ('' = none set); anything else is a producer bug.
CLAIMABLE = frozenset({"", *(s.value for s in Status if s not in FINAL)})
