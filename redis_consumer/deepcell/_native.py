"""The compiled per-pixel loops (`_kernels.c`), or None where the extension was not built.

Why C: CLAHE's bilinear mapping (four table gathers, four float64 products, a float32 sum per
pixel) and the untile blend (a float64 weighted sum of up to four tiles per pixel) each took
several numpy passes over float64 temporaries; one C pass does the same IEEE operations in the
same order (compiled with -ffp-contract=off, so no fused multiply-adds), at about 1/4 of the
CPU of CLAHE's mapping and 1/5 of untile's on a 1024 x 1024 image (docs/performance.md). The
install step (`pip install .` / `make venv`) compiles it; a source tree run without building
falls back to the numpy code with one warning, and gives the same results, slower.
"""

from __future__ import annotations

import logging
from types import ModuleType

kernels: ModuleType | None
try:
    from redis_consumer.deepcell import _kernels as kernels
except ImportError as exc:  # a source tree that was never built: numpy fallbacks
    kernels = None
    logging.getLogger(__name__).warning(
        "the C kernels (redis_consumer.deepcell._kernels) are not built (%s): CLAHE and untile run "
        "the slower numpy code; `pip install -e .` builds them", exc)
