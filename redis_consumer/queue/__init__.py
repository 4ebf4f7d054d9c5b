"""The reliable Redis queue: connection, key names, Lua steps (`lua/*.lua`) and the broker that runs them."""

from .broker import Broker, Claim, ClaimResult, Job
from .connection import connect
from .dead_letters import DeadLetters
from .status import FailureType, Status

__all__ = ["Broker", "Claim", "ClaimResult", "DeadLetters", "FailureType", "Job", "Status", "connect"]
