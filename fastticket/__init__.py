"""fastticket: super tickets in pre-trained transformer encoders, fast."""

from .data import Task, load_task
from .models import EncoderConfig, TicketModel, load_model
from .tickets import Importance, Ticket, importance, select

__version__ = "0.1.0"

__all__ = ["EncoderConfig", "TicketModel", "load_model", "Task", "load_task", "Importance", "importance", "select", "Ticket"]
