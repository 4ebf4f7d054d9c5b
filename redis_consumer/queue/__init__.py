"""The reliable Redis queue: connection, key names, Lua scripts and the broker that uses them."""

from .broker import Broker, ClaimResult, Job
from .connection import connect

__all__ = ["Broker", "ClaimResult", "Job", "connect"]
