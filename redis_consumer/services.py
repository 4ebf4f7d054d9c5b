"""What a consumer may use besides its job: the bucket and the TF Serving client.

Created by the worker (or the plug-in kit) and handed to the consumer; each client is built on
first use, so a worker imports only what its consumer touches. Tests put stand-ins in either slot.
"""

from __future__ import annotations

from typing import Any

from .settings import Settings


class Services:
    """`storage` (bucket client for STORAGE_BUCKET) and `tf` (TF Serving client for TF_HOST:TF_PORT)."""

    def __init__(self, settings: Settings, *, storage: Any = None, tf: Any = None, cache: Any = None) -> None:
        self.settings = settings
        self._storage = storage
        self._tf = tf
        self._cache = cache  # Redis client the TF client keeps model metadata in (not for jobs)

    @property
    def storage(self) -> Any:
        """`download(key, dest_dir, deadline=...)`, `upload(path, key, deadline=...) -> (key, url)`, `exists(key)`."""
        if self._storage is None:
            from . import storage as storage_pkg

            self._storage = storage_pkg.get_client(self.settings.STORAGE_BUCKET, settings=self.settings)
        return self._storage

    @storage.setter
    def storage(self, client: Any) -> None:
        self._storage = client

    @property
    def tf(self) -> Any:
        """`get_metadata(model, version)`, `predict(model, version, inputs, deadline=...)` (one per process)."""
        if self._tf is None:
            from .tfserving.client import get_client

            self._tf = get_client(self.settings, redis_client=self._cache)
        return self._tf

    @tf.setter
    def tf(self, client: Any) -> None:
        self._tf = client
