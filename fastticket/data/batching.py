"""Turning tokenized examples into padded tensor batches (right padding, as the encoder requires)."""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def collate(examples: list[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Pads a list of tokenized examples (input_ids lists, labels) on the right to the longest one."""
    longest = max(len(e["input_ids"]) for e in examples)
    batch = {
        "input_ids": torch.full((len(examples), longest), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), longest), dtype=torch.long),
    }
    has_types = "token_type_ids" in examples[0]
    if has_types:
        batch["token_type_ids"] = torch.zeros((len(examples), longest), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        batch["input_ids"][i, :n] = torch.as_tensor(e["input_ids"])
        batch["attention_mask"][i, :n] = 1
        if has_types:
            batch["token_type_ids"][i, :n] = torch.as_tensor(e["token_type_ids"])
    labels = [e["labels"] for e in examples]
    batch["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
    return batch


def iterate_batches(
    data, batch_size: int, pad_token_id: int = 0, generator: torch.Generator | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Padded batches from a datasets.Dataset (a Task split), or dict batches passed through.

    generator: shuffle a dataset's rows with torch.randperm(len, generator=generator) (the same
    generator state gives the same order); None keeps the stored order. Dict batches are never shuffled.
    Every batch must carry labels ("labels", or "label" in a dataset); one ValueError says what is missing.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1")
    if hasattr(data, "train") and hasattr(data, "dev"):
        raise ValueError(f"data is a whole task ({type(data).__name__}); pass one split, e.g. task.train")
    if _is_example_table(data):
        order = None if generator is None else torch.randperm(len(data), generator=generator).tolist()
        yield from _batches_from_table(data, batch_size, pad_token_id, order)
        return
    if generator is not None:
        raise ValueError("generator= shuffles a datasets.Dataset / Task split; it cannot shuffle an iterable of batches")
    if isinstance(data, dict):
        raise ValueError("data is a single dict; allowed: a Task split / datasets.Dataset, or an iterable of dict batches")
    for batch in data:
        if not isinstance(batch, dict) or "input_ids" not in batch:
            raise ValueError(f"a batch of type {type(batch).__name__} has no 'input_ids'; allowed: dict batches with input_ids and labels")
        if "labels" not in batch:
            raise ValueError(f"a batch has no 'labels' (keys: {sorted(batch)}); importance needs labeled data")
        yield {k: torch.as_tensor(v) for k, v in batch.items() if k in MODEL_INPUTS + ("labels",)}


def num_examples(data) -> int | None:
    return len(data) if _is_example_table(data) else None


def _is_example_table(data) -> bool:
    """A datasets.Dataset (a Task split is one): rows of token-id lists, batched and padded here."""
    return getattr(data, "column_names", None) is not None


def _batches_from_table(data, batch_size, pad_token_id, order=None) -> Iterable[dict[str, torch.Tensor]]:
    columns = set(data.column_names)
    if "input_ids" not in columns:
        raise ValueError(f"dataset has no 'input_ids' column (columns: {sorted(columns)}); tokenize it first, e.g. with ft.load_task")
    label = "labels" if "labels" in columns else "label" if "label" in columns else None
    if label is None:
        raise ValueError(f"dataset has no 'labels' or 'label' column (columns: {sorted(columns)}); importance needs labeled data")
    keep = [c for c in MODEL_INPUTS if c in columns and c != "attention_mask"]
    data = data.select_columns(keep + [label])  # no text columns decoded on the hot path
    for start in range(0, len(data), batch_size):
        # a dict of columns
        rows = data[start : start + batch_size] if order is None else data[order[start : start + batch_size]]
        rows = [dict(zip(rows, values)) for values in zip(*rows.values())]
        yield collate([{**{c: r[c] for c in keep}, "labels": r[label]} for r in rows], pad_token_id)


def batch_of_rows(data, rows: list[int], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """One padded batch of the given rows of a dataset (samplers that pick rows themselves)."""
    return next(iter(_batches_from_table(data, len(rows), pad_token_id, rows)))


def seeded_subset(data, limit: int | None, seed: int = 0):
    """`limit` rows of a dataset drawn without replacement by a seeded permutation (kept in stored order);
    all of it when limit is None or not smaller."""
    if limit is None or limit >= len(data):
        return data
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    return data.select(sorted(order[:limit]))
