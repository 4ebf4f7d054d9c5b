"""Consumers: the base class and the registry of consumer types.

Importing this package stays light; concrete consumers are imported by the registry on demand.
"""

from ..errors import TransientError, UserError
from .base import PARKED, ClaimLost, Consumer

__all__ = ["PARKED", "ClaimLost", "Consumer", "TransientError", "UserError"]
