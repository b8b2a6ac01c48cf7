"""The masked encoder, its model families (adapters) and the Hugging Face converters."""

from .config import FAMILIES, EncoderConfig
from .encoder import EncoderOutput, TicketModel, task_loss
from .exporting import FORMATS, export, load_pruned
from .families import get_family
from .loading import load_model

__all__ = ["EncoderConfig", "EncoderOutput", "TicketModel", "load_model", "task_loss", "FAMILIES", "export",
           "load_pruned", "FORMATS", "get_family"]
