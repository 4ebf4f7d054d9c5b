"""redis-consumer: reliable Redis-queue workers for TensorFlow Serving inference.

Kept import-light on purpose: a worker must start in well under a second, so nothing heavy
(numpy, grpc, cloud SDKs) is imported here.
"""

__version__ = "0.1.0"

from ._lazy_redis import defer_redis_asyncio as _defer_redis_asyncio

_defer_redis_asyncio()  # before anything imports redis (see _lazy_redis)
