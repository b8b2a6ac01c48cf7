"""Importance, selection and tickets."""

from .importance import ESTIMATORS, Importance, importance
from .select import KINDS, select
from .ticket import Ticket

__all__ = ["Importance", "importance", "select", "Ticket", "ESTIMATORS", "KINDS"]
