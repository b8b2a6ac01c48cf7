"""Importance, selection and tickets."""

from .importance import ESTIMATORS, Importance, importance
from .rewind import rewind, ticket_of
from .search import SearchResult, search
from .select import KINDS, select
from .ticket import Ticket

__all__ = ["Importance", "importance", "select", "Ticket", "rewind", "ticket_of", "search", "SearchResult",
           "ESTIMATORS", "KINDS"]
