"""Consumers: the base class and the registry of consumer types.

Importing this package stays light; concrete consumers are imported by the registry on demand.
"""

from ..errors import ClaimLost, TransientError, UserError
from ..job import Job
from .base import Consumer

__all__ = ["ClaimLost", "Consumer", "Job", "TransientError", "UserError"]
