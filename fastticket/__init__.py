"""fastticket: super tickets in pre-trained transformer encoders, fast."""

from .data import Task, compute_metrics, load_task, task_names
from .models import EncoderConfig, TicketModel, export, load_model, load_pruned
from .tickets import Importance, SearchResult, Ticket, importance, rewind, search, select, ticket_of
from .tickets import AdaptResult, SharedModel, ShareResult, adapt, fine_tune_shared, share_tickets  # noqa: E402
from .train import TrainConfig, TrainResult, evaluate, fine_tune, predict

__version__ = "0.1.0"

__all__ = [
    "EncoderConfig", "TicketModel", "load_model", "export", "load_pruned", "Task", "load_task", "task_names",
    "compute_metrics", "Importance", "importance", "select", "Ticket", "rewind", "ticket_of", "search",
    "SearchResult", "share_tickets", "SharedModel", "ShareResult", "adapt", "AdaptResult", "fine_tune_shared", "fine_tune", "evaluate", "predict", "TrainResult", "TrainConfig",
]
