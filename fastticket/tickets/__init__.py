"""Importance, selection and tickets."""

from .importance import ESTIMATORS, Importance, importance
from .rewind import rewind, ticket_of
from .search import SearchResult, search
from .select import KINDS, select
from .ticket import Ticket
from .sharing import SharedModel, ShareResult, share_tickets  # noqa: E402
from .adapt import AdaptResult, adapt, fine_tune_shared  # noqa: E402

__all__ = ["Importance", "importance", "select", "Ticket", "rewind", "ticket_of", "search", "SearchResult",
           "ESTIMATORS", "KINDS",
           "share_tickets", "SharedModel", "ShareResult", "adapt", "AdaptResult", "fine_tune_shared"]
