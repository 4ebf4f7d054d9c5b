"""The package's C extensions (metadata lives in setup.cfg).

redis_consumer/deepcell/_clahe_kernels.c, _untile_kernels.c, _percentile_kernels.c and
_overlay_kernels.c hold the CLAHE mapping, untile blending, Mesmer percentile-threshold and
overlay-outline loops; they are compiled without floating-point contraction so their results
equal the numpy code they replace bit for bit (redis_consumer/deepcell/_native.py says why and
what they save). A C compiler is needed at install time.
"""

from setuptools import Extension, setup

FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-std=c11"]
HEADERS = ["redis_consumer/deepcell/_buffers.h"]

# -fno-trapping-math: the compiler may then turn float compare-and-select into branch-free
# vector code (clip_unit_u16); every value is still IEEE's, only exception flags (never read) differ
EXTRA = {"percentile": ["-fno-trapping-math"]}

setup(
    ext_modules=[
        Extension(f"redis_consumer.deepcell._{name}_kernels", sources=[f"redis_consumer/deepcell/_{name}_kernels.c"],
                  depends=HEADERS, extra_compile_args=FLAGS + EXTRA.get(name, []))
        for name in ("clahe", "untile", "percentile", "overlay")
    ]
)
