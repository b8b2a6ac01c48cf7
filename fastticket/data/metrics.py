"""GLUE metrics from scikit-learn / scipy, and the primary (selection) score of a task.

Metric names: "accuracy", "f1" (binary, positive class 1), "mcc" (Matthews), "pearson", "spearman", and
the two GLUE-score means: "accuracy_f1" = (accuracy + f1) / 2 (MRPC, QQP) and "pearson_spearman" =
(pearson + spearman) / 2 (STS-B), which is how the GLUE benchmark scores those tasks. A task reports
its components too: MRPC -> accuracy, f1, accuracy_f1.

Undefined correlations (a constant prediction or label vector) score 0.0, as scikit-learn's MCC does,
so that a selection score is always a finite number.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc", "accuracy_f1")
REGRESSION_METRICS = ("pearson", "spearman", "pearson_spearman")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
# a combined metric is reported with its components
COMPONENTS = {"accuracy_f1": ("accuracy", "f1"), "pearson_spearman": ("pearson", "spearman")}


def accuracy(predictions, labels) -> float:
    p, y = _classes(predictions), _labels(labels)
    _same_length(p, y)
    return float((p == y).mean()) if len(y) else float("nan")


def f1(predictions, labels) -> float:
    from sklearn.metrics import f1_score

    p, y = _classes(predictions), _labels(labels)
    _same_length(p, y)
    return float(f1_score(y, p, pos_label=1, average="binary", zero_division=0.0))


def mcc(predictions, labels) -> float:
    from sklearn.metrics import matthews_corrcoef

    p, y = _classes(predictions), _labels(labels)
    _same_length(p, y)
    return float(matthews_corrcoef(y, p))


def pearson(predictions, labels) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, predictions, labels)


def spearman(predictions, labels) -> float:
    from scipy.stats import spearmanr

    return _correlation(spearmanr, predictions, labels)


_FUNCTIONS: dict[str, Callable] = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def primary_metric(task_or_metric) -> str:
    """The name of the selection score: a Task's .metric, or a metric name (checked)."""
    name = getattr(task_or_metric, "metric", task_or_metric)
    if not isinstance(name, str) or name not in METRICS:
        raise ValueError(f"metric {name!r} is unknown; allowed: {list(METRICS)}")
    return name


def reported_metrics(task_or_metric) -> tuple[str, ...]:
    """Every metric reported for a task or metric name, the primary one last."""
    primary = primary_metric(task_or_metric)
    names = list(getattr(task_or_metric, "metrics", ()) or ())
    for name in COMPONENTS.get(primary, ()) + (primary,):
        if name not in names:
            names.append(name)
    for name in names:
        primary_metric(name)
    return tuple(n for n in names if n != primary) + (primary,)


def compute_metrics(predictions, labels, task_or_metric="accuracy") -> dict[str, float]:
    """{metric name: value} for a Task (its reported metrics) or a metric name; the primary one included.

    predictions: logits [N, C] (argmax taken), class ids [N], or regression outputs [N] / [N, 1];
    labels: [N]. Tensors, numpy arrays or lists.
    """
    names = reported_metrics(task_or_metric)
    out: dict[str, float] = {}
    for name in names:
        if name in COMPONENTS:
            out[name] = float(np.mean([out[c] if c in out else _FUNCTIONS[c](predictions, labels) for c in COMPONENTS[name]]))
        else:
            out[name] = _FUNCTIONS[name](predictions, labels)
    return out


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _classes(predictions) -> np.ndarray:
    p = _array(predictions)
    if p.ndim == 2:
        if p.shape[1] == 1:
            raise ValueError("predictions have one column (regression outputs); a classification metric needs logits [N, C>=2] or class ids [N]")
        return p.argmax(axis=1)
    if p.ndim != 1:
        raise ValueError(f"predictions have shape {p.shape}; allowed: logits [N, C] or class ids [N]")
    return p.astype(np.int64)


def _labels(labels) -> np.ndarray:
    y = _array(labels)
    if y.ndim != 1:
        raise ValueError(f"labels have shape {y.shape}; allowed: [N]")
    return y.astype(np.int64)


def _values(predictions) -> np.ndarray:
    p = _array(predictions).astype(np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 1:
        raise ValueError(f"predictions have shape {p.shape}; a correlation needs regression outputs [N] or [N, 1]")
    return p


def _same_length(p, y) -> None:
    if len(p) != len(y):
        raise ValueError(f"{len(p)} predictions but {len(y)} labels")


def _correlation(fn, predictions, labels) -> float:
    p, y = _values(predictions), _array(labels).astype(np.float64)
    _same_length(p, y)
    if len(y) < 2 or np.ptp(p) == 0 or np.ptp(y) == 0:
        return 0.0  # undefined (constant input): no correlation
    value = float(fn(p, y)[0])
    return value if math.isfinite(value) else 0.0

