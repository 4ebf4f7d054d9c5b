"""Which class serves a `CONSUMER_TYPE`: built-ins, installed plug-ins, or `module:Class`.

Built-ins are named by import path and loaded only when chosen, so a worker imports just its
own consumer. Other packages add types through the entry-point group
`redis_consumer.consumers` without editing this repository.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError

ENTRY_POINT_GROUP = "redis_consumer.consumers"

BUILTIN: dict[str, str] = {
    "noop": "redis_consumer.consumers.noop:NoopConsumer",
    "segmentation": "redis_consumer.consumers.segmentation:SegmentationConsumer",
    "image": "redis_consumer.consumers.segmentation:SegmentationConsumer",
    "mesmer": "redis_consumer.consumers.mesmer:MesmerConsumer",
    "multiplex": "redis_consumer.consumers.mesmer:MesmerConsumer",
    "zip": "redis_consumer.consumers.zip_consumer:ZipConsumer",
    "polaris": "redis_consumer.consumers.polaris:PolarisConsumer",
    "spot": "redis_consumer.consumers.polaris:SpotConsumer",
    "caliban": "redis_consumer.consumers.caliban:CalibanConsumer",
    "tracking": "redis_consumer.consumers.caliban:CalibanConsumer",
}


def _plugins() -> dict[str, object]:
    # imported here: importlib.metadata (zipfile, email, csv...) is ~13 ms a built-in type never needs
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every consumer type name this installation can run."""
    return sorted(set(BUILTIN) | set(_plugins()))


def _import(path: str) -> type:
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def load(name: str) -> type:
    """The consumer class for `name`; `ConfigError` listing the choices when unknown."""
    from .base import Consumer

    if name in BUILTIN:
        cls = _import(BUILTIN[name])
    else:
        plugin = _plugins().get(name)
        if plugin is not None:
            cls = plugin.load()
        elif ":" in name:
            try:
                cls = _import(name)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"CONSUMER_TYPE {name!r} could not be imported ({exc})") from None
        else:
            raise ConfigError(f"CONSUMER_TYPE must be one of {', '.join(available())} or module:Class, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Consumer)):
        raise ConfigError(f"CONSUMER_TYPE {name!r} does not name a Consumer subclass")
    return cls
