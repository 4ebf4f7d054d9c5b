# syntax=docker/dockerfile:1
# redis-consumer worker image: no TensorFlow (the worker speaks gRPC to TensorFlow Serving),
# no compilers in the final stage (the build stage has gcc for the package's C kernels), runs as a
# non-root user.
#
#   docker build -t redis-consumer .
#   docker run --rm -e REDIS_HOST=redis -e QUEUE=segmentation redis-consumer
#
# tests/test_dockerfile.py replays the pip steps of the build stage in a fresh virtualenv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install the package and its dependencies (manylinux wheels) into /opt/venv ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# a C compiler for the package's own extensions (redis_consumer/deepcell/_*_kernels.c: the CLAHE,
# untile and percentile-threshold loops); this stage only, the runtime stage copies the built venv and has no compiler.
# Versions are the base image's Debian release's (unpinned: its point releases replace them).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml setup.cfg setup.py consume_redis_events.py constraints.txt README* ./
COPY redis_consumer ./redis_consumer
# the example plug-in ships in the image so the helmfile's `classify` release can run it
COPY examples/classify ./examples/classify
# constraints.txt (scripts/lock-deps.sh) pins every runtime dependency: rebuilds get the same wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-compile --constraint constraints.txt . ./examples/classify \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/redis-consumer --help > /dev/null

# ---- runtime: the venv and nothing else ----
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
RUN groupadd --system --gid "${UID}" app \
    && useradd --system --uid "${UID}" --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# glibc malloc tuned for large gRPC tensors: fewer mmap/munmap page faults on fresh buffers
# (bench/bench_gpu.py SHIPPED: ~1.1-1.2x GPU busy and ~0.75x client CPU vs default malloc; a 256 MiB mmap
# threshold also keeps Mesmer's ~65 MB replies warm: ~0.87x its CPU outside the deep watershed vs 32 MiB;
# docs/tfserving.md; the chart sets the same values, tests/test_helm.py keeps them equal)
ENV PATH=/opt/venv/bin:$PATH \
    MALLOC_MMAP_THRESHOLD_=268435456 \
    MALLOC_TRIM_THRESHOLD_=536870912 \
    MALLOC_TOP_PAD_=67108864 \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REDIS_CONSUMER_IN_CONTAINER=1 \
    METRICS_PORT=9090 \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 9090
ENTRYPOINT ["redis-consumer", "consume"]
