"""What a worker process sets up before its first heavy import, and undoes once it is warm.

`prepare_process()` runs first thing in the worker entry point (`redis-consumer consume`,
`consume_redis_events.py`); `startup_done()` runs when the warm-up is over, before the first
claim. Measured on a cold segmentation worker (2 shared cores, bench/bench_coldstart.py):

- OpenBLAS (numpy's and scipy's copies) starts one spinning thread per extra core at import;
  the two threads burned ~0.15 s of CPU before the first result, competing with the start-up
  on a shared node. A worker does no BLAS work worth threads, so `OPENBLAS_NUM_THREADS`
  defaults to 1 (an operator's own value is kept).
- scipy's first import also imports numpy's f2py and testing packages and scipy.special,
  which the worker never calls: deferred (~80 ms of CPU, ~16 MB), see `_lazy_modules`.
- The cyclic garbage collector re-walks every object the imports created, again and again:
  paused during start-up (~12 % of its CPU), then the start-up objects are frozen (`gc.freeze`,
  so later collections skip them: a full one drops from ~11 ms to ~0 here) and collection
  resumes. The price is the few hundred cyclic objects the imports left unreachable (~450 here,
  tens of KB), kept once for the life of the process.
"""

from __future__ import annotations

import gc
import os
import threading

from . import _lazy_modules

#: Environment defaults for the native libraries, set only where the operator set nothing.
NATIVE_DEFAULTS = {"OPENBLAS_NUM_THREADS": "1"}

_LOCK = threading.Lock()
_paused = False


def prepare_process() -> None:
    """Call before numpy or scipy is imported: native defaults, deferred modules, GC paused.

    Pair it with `startup_done()` (idempotent, also on error paths): the GC stays paused until then.
    """
    global _paused
    for name, value in NATIVE_DEFAULTS.items():
        os.environ.setdefault(name, value)  # read by the libraries from the process environment
    _lazy_modules.install()
    with _LOCK:
        if gc.isenabled():
            gc.disable()
            _paused = True


def startup_done() -> None:
    """The warm-up is over: freeze what start-up allocated and resume the GC paused above."""
    global _paused
    with _LOCK:
        if not _paused:
            return
        _paused = False
        gc.freeze()
        gc.enable()
