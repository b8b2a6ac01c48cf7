"""Tasks: a train and a dev split of tokenized examples, a metric, a label count."""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass, field

from ..defaults import default_model_path

EMBEDDED_DIR = os.path.join(os.path.dirname(__file__), "embedded")
EMBEDDED_TASKS = {"rotten_tomatoes": ("rotten_tomatoes.tsv.gz", "accuracy", 2)}
EMBEDDED_TASKS["bbc_news"] = ("bbc_news.tsv.gz", "accuracy", 5)  # scripts/build_bbc_news.py
EMBEDDED_LABELS = {"rotten_tomatoes": ("rotten", "fresh"),
                   "bbc_news": ("business", "entertainment", "politics", "sport", "tech")}


TASK_DROPOUT = 0.1  # the paper's task-layer dropout (A.1.2); 0.3 for MNLI, 0.05 for CoLA (see glue.SPECS)


@dataclass
class Task:
    """name, train / dev (datasets.Dataset with input_ids, token_type_ids?, labels), metric, num_labels.

    metric: the primary (selection) metric; metrics: every metric reported (see data.metrics);
    label_names: the class names in id order (None for regression or integer-labeled local files);
    dropout: the task-layer dropout the paper uses for this task; extra_dev: further dev sets by name
    (MNLI: "dev_mismatched", MNLI-mm: "dev_matched"); data_dir: the resolved directory the data was read
    from (None: embedded or the hub); max_length: the length it was tokenized to (None: unknown).
    """

    name: str
    train: "datasets.Dataset"  # noqa: F821
    dev: "datasets.Dataset"  # noqa: F821
    metric: str
    num_labels: int
    label_names: tuple | None = None
    dropout: float = TASK_DROPOUT
    metrics: tuple = ()
    extra_dev: dict = field(default_factory=dict)
    data_dir: str | None = None
    max_length: int | None = None

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def compute_metrics(self, predictions, labels) -> dict[str, float]:
        """{metric: value} for predictions (logits, class ids or regression outputs) against labels."""
        from .metrics import compute_metrics

        return compute_metrics(predictions, labels, self)


def check_task_name(name) -> None:
    if not isinstance(name, str) or name not in task_names():
        raise ValueError(f"task {name!r} is unknown; allowed: {task_names()}")


def check_task_fits(task: Task, num_labels: int, max_positions: int | None = None) -> None:
    """Every label of every split fits a model with `num_labels` outputs (ids in [0, num_labels), or finite
    floats for regression) and no example is longer than the model's `max_positions`: one ValueError
    naming the split and example otherwise."""
    import math

    splits = {"train": task.train, "dev": task.dev, **dict(task.extra_dev)}
    for split, data in splits.items():
        for i, label in enumerate(data["labels"]):
            if num_labels == 1:
                ok = isinstance(label, (int, float)) and not isinstance(label, bool) and math.isfinite(label)
                allowed = "a finite number (regression)"
            else:
                ok = isinstance(label, int) and not isinstance(label, bool) and 0 <= label < num_labels
                allowed = f"a class id in 0..{num_labels - 1} (the model has {num_labels} labels)"
            if not ok:
                raise ValueError(f"task {task.name!r}: {split} example {i} has label {label!r}; allowed: {allowed}")
        if max_positions is not None and len(data):
            longest = max(len(ids) for ids in data["input_ids"])
            if longest > max_positions:
                raise ValueError(f"task {task.name!r}: {split} holds an example of {longest} tokens; the model has "
                                 f"{max_positions} positions: tokenize with max_length <= {max_positions}")


def task_names() -> list[str]:
    from .glue import GLUE_TASKS

    return sorted(EMBEDDED_TASKS) + list(GLUE_TASKS) + ["local"]


def load_task(
    name: str,
    tokenizer=None,
    max_length: int = 128,
    data_dir: str | None = None,
    *,
    text_columns=None,
    label_column: str = "label",
    label_names=None,
    regression: bool | None = None,
    metric: str | None = None,
    dropout: float | None = None,
    max_examples: int | None = None,
) -> Task:
    """A tokenized Task. tokenizer: a tokenizer object, a checkpoint dir / hub name, or None for the
    embedded default model's tokenizer.

    name: "rotten_tomatoes" (embedded, offline); a GLUE task ("cola", "sst2", "mrpc", "stsb", "qqp",
    "mnli" (dev = matched), "mnli-mm" (dev = mismatched), "qnli", "rte"), "snli" or "scitail" — from
    data_dir (a GLUE-layout root or the task's folder; see data.glue) or, with data_dir=None, the Hugging
    Face hub via datasets.load_dataset; or "local": data_dir/train.{csv,tsv,json,jsonl} and dev.{...} with
    text_columns (one name or a pair), label_column, and optionally label_names / regression (see
    data.local). metric / dropout override the task's defaults; max_examples keeps the first N rows of
    each split (quick runs).
    """
    from .metrics import REGRESSION_METRICS, primary_metric

    _check_options(name, max_length, max_examples, dropout, metric, text_columns, label_names, regression)
    raw, names, num_labels, default_metric, metrics, task_dropout = _read_raw(
        name, data_dir, text_columns, label_column, label_names, regression)
    chosen = metric or default_metric
    if (num_labels == 1) != (primary_metric(chosen) in REGRESSION_METRICS):
        kind = "regression" if num_labels == 1 else "classification"
        raise ValueError(f"metric {chosen!r} does not fit task {name!r} ({kind})")
    if metric is not None:
        metrics = ()
    tok = resolve_tokenizer(tokenizer)
    raw = {s: r.head(max_examples) for s, r in raw.items()}
    splits = {s: tokenize_texts(tok, r.texts, r.labels, max_length, r.pairs) for s, r in raw.items()}
    return Task(
        name=name, train=splits.pop("train"), dev=splits.pop("dev"), metric=chosen, num_labels=num_labels,
        label_names=names, dropout=task_dropout if dropout is None else dropout, metrics=tuple(metrics), extra_dev=splits,
        data_dir=os.path.realpath(data_dir) if data_dir is not None else None, max_length=max_length,
    )


def _check_options(name, max_length, max_examples, dropout, metric, text_columns, label_names, regression) -> None:
    from .metrics import METRICS

    check_task_name(name)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length={max_length}; allowed: an integer >= 2")
    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 1):
        raise ValueError(f"max_examples={max_examples!r}; allowed: None (all) or an integer >= 1")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout}; allowed: a float in [0, 1)")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric {metric!r} is unknown; allowed: {list(METRICS)}")
    if name != "local" and (text_columns is not None or label_names is not None or regression is not None):
        raise ValueError(f"text_columns / label_names / regression are for task 'local' only (got task {name!r})")


def _read_raw(name, data_dir, text_columns, label_column, label_names, regression):
    """The task's raw splits and what it defines: (raw, label names, num_labels, default metric, the
    metrics it reports, task-layer dropout)."""
    from . import glue

    if name in EMBEDDED_TASKS:
        if data_dir is not None:
            raise ValueError(f"task {name!r} is embedded; it takes no data_dir (use 'local' for files)")
        file, default_metric, num_labels = EMBEDDED_TASKS[name]
        raw = _read_embedded(os.path.join(EMBEDDED_DIR, file))
        raw = {s: glue.RawSplit(raw[s]["text"], None, raw[s]["labels"]) for s in ("train", "dev")}
        return raw, EMBEDDED_LABELS.get(name), num_labels, default_metric, (default_metric,), TASK_DROPOUT
    if name == "local":
        from .local import read_local

        raw, names, num_labels = read_local(data_dir, text_columns, label_column, label_names, regression)
        return raw, names, num_labels, "pearson_spearman" if num_labels == 1 else "accuracy", (), TASK_DROPOUT
    spec = glue.SPECS[name]
    raw = glue.read_glue(name, data_dir)
    return raw, spec.label_names, spec.num_labels, spec.metric, spec.metrics, spec.dropout


def resolve_tokenizer(tokenizer):
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        source = str(tokenizer or default_model_path())
        try:
            return AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError, TypeError, KeyError, ImportError) as exc:  # missing dir, no tokenizer files, hub
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = "directory" if os.path.isdir(source) else "directory or hub name"
            raise ValueError(f"cannot load a tokenizer from {source!r} (a checkpoint {where} with tokenizer files "
                             f"is expected): {detail}") from None
    return tokenizer


def tokenize_texts(tokenizer, texts, labels, max_length: int, pairs=None):
    """datasets.Dataset with text, labels and the tokenizer's ids (unpadded; batches pad later). Long texts are
    cut before tokenization (data.truncate): the ids are those of the whole text, the cost bounded by max_length."""
    import datasets

    from .truncate import cut_texts

    short, short_pairs = cut_texts(tokenizer, texts, pairs, max_length)
    enc = tokenizer(short, short_pairs, truncation=True, max_length=max_length)
    columns = {"text": list(texts), "labels": list(labels), "input_ids": enc["input_ids"]}
    if pairs is not None:
        columns["text_pair"] = list(pairs)
    if "token_type_ids" in enc:
        columns["token_type_ids"] = enc["token_type_ids"]
    return datasets.Dataset.from_dict(columns)


def _read_embedded(path: str) -> dict:
    splits = {"train": {"text": [], "labels": []}, "dev": {"text": [], "labels": []}}
    with gzip.open(path, "rb") as raw:
        for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE):
            splits[row["split"]]["text"].append(row["text"])
            splits[row["split"]]["labels"].append(int(row["label"]))
    return splits
