"""Tasks, tokenization and batching."""

from .batching import collate, iterate_batches
from .task import EMBEDDED_TASKS, Task, load_task

__all__ = ["Task", "load_task", "collate", "iterate_batches", "EMBEDDED_TASKS"]
