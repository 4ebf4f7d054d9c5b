"""In-process property test of utils/safe_zip on drawn zips (the fleet fuzz's zip strategy, no workers).

Whatever the bytes, `plan` returns a plan or raises `UserError` with a one-sentence reason, and
`extract` of every planned entry writes a file or raises `UserError`; nothing else escapes.
"""

from __future__ import annotations

import os
import zipfile

from hypothesis import HealthCheck, given, settings

from redis_consumer.errors import UserError
from redis_consumer.utils import safe_zip
from tests.helpers.fuzz_fleet import reason_problem
from tests.helpers.fuzz_jobs import zip_bytes


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(data=zip_bytes(exclude_known=True))
def test_plan_and_extract_fail_only_as_user_errors(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("z")
    path = os.path.join(tmp, "in.zip")
    with open(path, "wb") as fh:
        fh.write(data)
    try:
        plan = safe_zip.plan(path, max_entries=200, max_bytes=64 << 20, max_ratio=200.0, display_name="in.zip")
    except UserError as exc:
        assert reason_problem(str(exc)) is None, str(exc)
        return
    with zipfile.ZipFile(path) as zf:
        for i, entry in enumerate(plan.entries):
            dest = os.path.join(tmp, f"out-{i}")
            try:
                safe_zip.extract(zf, entry, dest)
            except UserError as exc:
                assert reason_problem(str(exc)) is None, str(exc)
