"""The package's one C extension (metadata lives in setup.cfg).

redis_consumer/deepcell/_kernels.c holds the CLAHE mapping and untile blending loops; it is
compiled without floating-point contraction so its results equal the numpy code it replaces
bit for bit (see redis_consumer/deepcell/_native.py). A C compiler is needed at install time.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "redis_consumer.deepcell._kernels",
            sources=["redis_consumer/deepcell/_kernels.c"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math", "-std=c11"],
        )
    ]
)
