"""Property-based fuzzing of what a producer can write, against a real fleet (issue 15, "Deliver").

One image (segmentation) worker and one zip worker, real processes, serve a private redis-server,
a `file://` bucket and the dev model server for the whole module. Each hypothesis example is a
batch of drawn `JobSpec`s (tests/helpers/fuzz_jobs.py): job hashes with arbitrary bytes, lengths
and field combinations, and arbitrary or truncated TIFF/PNG/npy/zip uploads. After each batch
`Fleet.run_batch` (tests/helpers/fuzz_fleet.py) checks: no worker died or stopped heartbeating,
every job is final or dead-lettered, every `failed` has a one-sentence reason with no traceback or
secret, no traceback or secret in the worker logs, and a known-good image and zip job end `done`.

Profiles (FUZZ_PROFILE): `ci` (default, derandomized, no database, no shrinking: the failing
batch's jobs are printed as hex/JSON repros) and `long` (random, database under
.hypothesis/fuzz, used by bench/bench_fuzz.py). FUZZ_BATCHES / FUZZ_BATCH_SIZE override the sizes.

`test_fuzz_known_classes_excluded` leaves out the input classes of the known defects of issue 15
(non-UTF-8 bytes, kiosk fields > 4 KiB, > 16 channels) and the FUZZ_EXCLUDE classes (comma list
of fuzz_jobs.FOUND_CLASSES, defects this fuzzer found; default none); `test_fuzz_all_inputs` draws from
everything and is expected to fail until those defects are fixed. `test_defect_repro[name]` runs
each defect's minimal repro (fuzz_jobs.regressions()) alone, so a fix can be checked by name.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.helpers.fuzz_fleet import Fleet, cleanup
from tests.helpers.fuzz_jobs import job_specs, regressions

PROFILE = os.environ.get("FUZZ_PROFILE", "ci")
_SIZES = {"ci": (30, 6), "long": (150, 8)}[PROFILE]
BATCHES = int(os.environ.get("FUZZ_BATCHES", _SIZES[0]))
BATCH_SIZE = int(os.environ.get("FUZZ_BATCH_SIZE", _SIZES[1]))
#: Classes found by this fuzzer (fuzz_jobs.FOUND_CLASSES) to leave out too, e.g. "attempts-not-int".
EXCLUDE = tuple(c for c in os.environ.get("FUZZ_EXCLUDE", "").split(",") if c)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_COMMON = {"max_examples": BATCHES, "deadline": None, "print_blob": True,
           "suppress_health_check": list(HealthCheck)}
if PROFILE == "ci":
    SETTINGS = settings(derandomize=True, database=None, phases=[Phase.explicit, Phase.generate], **_COMMON)
else:
    SETTINGS = settings(database=DirectoryBasedExampleDatabase(os.path.join(ROOT, ".hypothesis", "fuzz")),
                        phases=[Phase.explicit, Phase.reuse, Phase.generate], **_COMMON)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def fleet(redis_server, tmp_path_factory):
    f = Fleet(redis_server.url, tmp_path_factory.mktemp("fuzz")).start()
    yield f
    cleanup(f)


def _check(fleet: Fleet, batch) -> None:
    failures = fleet.run_batch(batch)
    assert not failures, json.dumps([f.as_dict() for f in failures], indent=1)[:20000]


@SETTINGS
@given(batch=st.lists(job_specs(exclude_known=True, exclude=EXCLUDE), min_size=max(1, BATCH_SIZE // 2), max_size=BATCH_SIZE))
def test_fuzz_known_classes_excluded(fleet, batch):
    _check(fleet, batch)


@SETTINGS
@given(batch=st.lists(job_specs(exclude_known=False), min_size=max(1, BATCH_SIZE // 2), max_size=BATCH_SIZE))
def test_fuzz_all_inputs(fleet, batch):
    _check(fleet, batch)


REGRESSIONS = regressions()


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_defect_repro(fleet, name):
    _check(fleet, [REGRESSIONS[name]])
