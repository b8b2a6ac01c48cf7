"""Tasks: a train and a dev split of tokenized examples, a metric, a label count."""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass

from ..defaults import default_model_path

EMBEDDED_DIR = os.path.join(os.path.dirname(__file__), "embedded")
EMBEDDED_TASKS = {"rotten_tomatoes": ("rotten_tomatoes.tsv.gz", "accuracy", 2)}


@dataclass
class Task:
    """name, train / dev (datasets.Dataset with input_ids, token_type_ids?, labels), metric, num_labels."""

    name: str
    train: "datasets.Dataset"  # noqa: F821
    dev: "datasets.Dataset"  # noqa: F821
    metric: str
    num_labels: int

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


def load_task(name: str, tokenizer=None, max_length: int = 128, data_dir: str | None = None) -> Task:
    """A tokenized Task. tokenizer: a tokenizer object, a checkpoint dir / hub name, or None for the
    embedded default model's tokenizer."""
    if name not in EMBEDDED_TASKS:
        raise ValueError(f"task {name!r} is unknown; allowed: {sorted(EMBEDDED_TASKS)}")
    if max_length < 2:
        raise ValueError(f"max_length={max_length}; allowed: an integer >= 2")
    file, metric, num_labels = EMBEDDED_TASKS[name]
    splits = _read_embedded(os.path.join(EMBEDDED_DIR, file))
    tok = resolve_tokenizer(tokenizer)
    train, dev = (tokenize_texts(tok, splits[s]["text"], splits[s]["labels"], max_length) for s in ("train", "dev"))
    return Task(name=name, train=train, dev=dev, metric=metric, num_labels=num_labels)


def resolve_tokenizer(tokenizer):
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(tokenizer or default_model_path()))
    return tokenizer


def tokenize_texts(tokenizer, texts, labels, max_length: int, pairs=None):
    """datasets.Dataset with text, labels and the tokenizer's ids (unpadded; batches pad later)."""
    import datasets

    enc = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=max_length)
    columns = {"text": list(texts), "labels": list(labels), "input_ids": enc["input_ids"]}
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
