"""Cold start (issue 17): a worker imports only what its job type and bucket need, and the
modules it defers still work when something does use them.

Each check runs in a fresh interpreter (imports are process state), the way the worker entry
point starts: `startup.prepare_process()` first, then the worker built from the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Never needed by a file:// segmentation worker before a job runs the deep watershed.
HEAVY = ("skimage.morphology", "skimage.feature", "skimage.segmentation", "skimage.exposure", "skimage.transform",
         "boto3", "botocore", "google.cloud.storage", "prometheus_client", "PIL.Image",
         "redis_consumer.deepcell.watershed", "redis_consumer.deepcell.preprocess")
#: Imported by scipy on its way in but deferred until used (redis_consumer/_lazy_modules.py).
DEFERRED = ("numpy.f2py", "numpy.testing", "numpy.ma", "numpy.polynomial", "scipy.special", "importlib.metadata")

_BUILD = """
import json, os, sys
from redis_consumer import startup
startup.prepare_process()
from redis_consumer import _lazy_modules
from redis_consumer.cli.consume import build_worker
from redis_consumer.settings import Settings
worker = build_worker(Settings.from_env())
"""


def _run(code: str, tmp_path: Path, **env: str) -> dict:
    environ = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
               "REDIS_URL": "redis://127.0.0.1:1/0", "STORAGE_BUCKET": f"file://{tmp_path}", "METRICS_PORT": "0",
               "CONSUMER_TYPE": "segmentation", "QUEUE": "segmentation", "ALLOW_ROOT": "true", **env}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _report(after: str = "") -> str:
    names = HEAVY + DEFERRED + ("scipy.ndimage", "tifffile", "grpc")
    return _BUILD + after + f"""
loaded = {{n: n in sys.modules and not _lazy_modules.deferred(n) for n in {names!r}}}
print(json.dumps({{"loaded": loaded, "blas": os.environ.get("OPENBLAS_NUM_THREADS")}}))
"""


def test_segmentation_worker_for_a_file_bucket_loads_no_heavy_module(tmp_path):
    got = _run(_report(), tmp_path)
    assert [n for n in HEAVY + DEFERRED + ("scipy.ndimage",) if got["loaded"][n]] == []
    assert got["blas"] == "1"  # the worker's default, before numpy loads OpenBLAS


def test_the_warm_up_imports_scipy_ndimage_but_not_the_deep_watershed_or_scipy_tools(tmp_path):
    # the warm-up's imports, without its network calls (no TF Serving or Redis here)
    got = _run(_report("import importlib\nfor name in worker.consumer.warm_modules: importlib.import_module(name)\n"),
               tmp_path)
    assert got["loaded"]["scipy.ndimage"] and got["loaded"]["tifffile"] and got["loaded"]["grpc"]
    assert [n for n in HEAVY + DEFERRED if got["loaded"][n]] == []


#: Never imported by a kiosk job's preprocessing and deep watershed: scikit-image's morphology,
#: feature and public watershed modules, and the scipy packages they import.
NOT_FOR_KIOSK_JOBS = ("skimage.morphology", "skimage.feature", "skimage.segmentation._watershed",
                      "skimage.segmentation.boundaries", "skimage.transform", "scipy.spatial", "scipy.sparse",
                      "scipy.linalg", "numpy.ma")


def test_a_kiosk_jobs_preprocessing_and_deep_watershed_import_neither_morphology_nor_scipy_tools(tmp_path):
    # each application's own parameters (deepcell/apps.py) on heads of touching nuclei; the
    # modules left out are ~23 MB of a worker's idle RSS (deepcell/flood.py)
    code = _BUILD + f"""
import numpy as np
from redis_consumer.deepcell import apps
from redis_consumer.deepcell.watershed import deep_watershed
from tests.deepcell_synthetic import heads_from_truth, touching_nuclei
truth, _, _ = touching_nuclei()
inner, outer = (h[None, ..., None] for h in heads_from_truth(truth))
apps.NuclearSegmentation.preprocess(outer)
apps.Mesmer.preprocess(np.concatenate([outer, inner], axis=-1))
counts = [int(deep_watershed([inner, outer], **spec.postprocess_kwargs(c)).max())
          for spec in (apps.NuclearSegmentation, apps.Mesmer) for c in spec.postprocess]
names = {NOT_FOR_KIOSK_JOBS + DEFERRED!r}
print(json.dumps({{"counts": counts, "watershed": "redis_consumer.deepcell.watershed" in sys.modules,
                  "loaded": [n for n in names if n in sys.modules and not _lazy_modules.deferred(n)]}}))
"""
    got = _run(code, tmp_path)
    assert min(got["counts"]) > 0 and got["watershed"]  # the objects were found, by our deep watershed
    assert got["loaded"] == []


def test_an_operators_blas_threads_are_kept(tmp_path):
    assert _run(_report(), tmp_path, OPENBLAS_NUM_THREADS="3")["blas"] == "3"


def test_only_the_bucket_schemes_client_is_imported(tmp_path):
    code = _BUILD + """
_ = worker.services.storage
print(json.dumps({n: n in sys.modules for n in ("botocore", "boto3", "google.cloud.storage")}))
"""
    env = {"STORAGE_BUCKET": "s3://some-bucket", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "AWS_DEFAULT_REGION": "us-east-1"}
    # botocore's client alone: boto3's resource layer and transfer helpers are never needed
    assert _run(code, tmp_path, **env) == {"botocore": True, "boto3": False, "google.cloud.storage": False}
    assert _run(code, tmp_path) == {"botocore": False, "boto3": False, "google.cloud.storage": False}


def test_deferred_modules_work_when_used(tmp_path):
    code = f"DEFERRED = {DEFERRED!r}\n" + """
import json, sys
from redis_consumer import startup, _lazy_modules
startup.prepare_process()
import numpy as np
import redis
import scipy.ndimage
from scipy import special as held             # the placeholder object scipy.ndimage keeps too
from redis.utils import metadata as redis_held  # redis-py's own reference to importlib.metadata
before = [n for n in DEFERRED if _lazy_modules.deferred(n)]
rotated = scipy.ndimage.rotate(np.eye(5), 90, order=0)  # ndimage's one use of scipy.special
import numpy.testing
from numpy.testing import assert_array_equal
np.testing.assert_array_equal(rotated, np.eye(5)[::-1])
masked = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
out = {"before": before,
       "gamma": float(held.gamma(5)), "real": type(sys.modules["scipy.special"].gamma).__name__,
       "same": sys.modules["numpy.testing"].assert_array_equal is assert_array_equal,
       "masked": int(masked.sum()), "poly": float(np.polynomial.Polynomial([1, 2])(3)),
       "f2py": hasattr(np.f2py, "run_main"),
       "redis_version": redis_held.version("redis") == redis.__version__,
       "entry_points": callable(sys.modules["importlib.metadata"].entry_points),
       # scipy's array-API docstring notes are skipped (_lazy_modules.keep_scipy_docs), nothing else
       "doc": scipy.ndimage.label.__doc__.split()[:3],
       "table": scipy.ndimage.label in sys.modules["scipy._lib._array_api"].xp_capabilities_table}
out["after"] = [n for n in DEFERRED if _lazy_modules.deferred(n)]
print(json.dumps(out))
"""
    got = _run(code, tmp_path)
    assert got["before"] == list(DEFERRED)
    assert got["after"] == []
    assert got["gamma"] == 24.0 and got["real"] == "ufunc" and got["same"]
    assert got["masked"] == 4 and got["poly"] == 7.0 and got["f2py"]
    assert got["redis_version"] and got["entry_points"]
    assert got["doc"] == ["Label", "features", "in"] and got["table"]


def test_a_worker_that_never_imports_scipy_imports_nothing_for_it(tmp_path):
    code = """
import json, sys
from redis_consumer import startup
startup.prepare_process()
import redis_consumer.worker
startup.startup_done()
import gc
print(json.dumps({"numpy": "numpy" in sys.modules, "gc": gc.isenabled()}))
"""
    assert _run(code, tmp_path) == {"numpy": False, "gc": True}
