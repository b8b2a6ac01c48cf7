"""Tasks, tokenization, batching and metrics."""

from .batching import collate, iterate_batches
from .glue import GLUE_TASKS
from .metrics import METRICS, compute_metrics, primary_metric
from .task import EMBEDDED_TASKS, Task, load_task, task_names

__all__ = [
    "Task", "load_task", "task_names", "collate", "iterate_batches", "EMBEDDED_TASKS", "GLUE_TASKS",
    "METRICS", "compute_metrics", "primary_metric",
]
