"""The compiled per-pixel loops (`_clahe_kernels.c`, `_untile_kernels.c`, `_percentile_kernels.c`,
`_overlay_kernels.c`), or None where unbuilt.

Why C: CLAHE's bilinear mapping (four table gathers, four float64 products, a float32 sum per
pixel; skimage's `_adapthist` arithmetic) and the untile blend (a float64 weighted sum of up to
four tiles per pixel) each took several numpy passes over float64 temporaries; one C pass does
the same IEEE operations in the same order (compiled with -ffp-contract=off, so no fused
multiply-adds). Measured on 1024 x 1024 (process CPU, interleaved medians): `clahe_grey` 0.30x
of the numpy path, `untile` of a one-channel head 0.32x (0.62x for a channel of a 3-channel
head, which is memory bound); per job the `pre` stage 0.37x (segmentation) / 0.58x (mesmer)
and `untile` ~0.44x (docs/deepcell.md). Mesmer's percentile_threshold takes np.percentile's two
order statistics by a radix selection over the float bits (`order_stats`, exact: it only
compares) instead of `np.partition` on a copy of the non-zero pixels, and the clip plus CLAHE's
uint16 conversion in one pass: `percentile_threshold` of a plane ~0.45x, Mesmer's `pre` a further
0.60x per job. The overlay PNG's outlines (`mark_outlines`) are one pass over the labels instead
of six boolean numpy passes and a masked copy (~0.4x). The install step (`pip install .` /
`make venv`) compiles them; a source tree run without building falls back to the numpy code
with one warning and the same results, slower.
"""

from __future__ import annotations

import logging
from types import ModuleType

clahe_kernels: ModuleType | None
untile_kernels: ModuleType | None
percentile_kernels: ModuleType | None
overlay_kernels: ModuleType | None
try:
    from redis_consumer.deepcell import _clahe_kernels as clahe_kernels
    from redis_consumer.deepcell import _overlay_kernels as overlay_kernels
    from redis_consumer.deepcell import _percentile_kernels as percentile_kernels
    from redis_consumer.deepcell import _untile_kernels as untile_kernels
except ImportError as exc:  # a source tree that was never built: numpy fallbacks
    clahe_kernels = untile_kernels = percentile_kernels = overlay_kernels = None
    logging.getLogger(__name__).warning(
        "the C kernels (redis_consumer.deepcell._clahe_kernels, _untile_kernels, _percentile_kernels, "
        "_overlay_kernels) are not built (%s): CLAHE, untile, the percentile threshold and the overlay "
        "outlines run the slower numpy code; "
        "`pip install -e .` builds them", exc)
