"""The dev model server as a subprocess on a free port (the plug-in kit's `ModelServer`)."""

from __future__ import annotations

from redis_consumer.testing import ModelServer

__all__ = ["ModelServer"]
