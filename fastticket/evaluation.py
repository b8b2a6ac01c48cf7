"""Predictions and dev metrics of a model on a split (ft.predict, ft.evaluate), in eval mode."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .data.batching import iterate_batches
from .data.metrics import compute_metrics
from .models.encoder import task_loss


@torch.no_grad()
def predict(model: nn.Module, data, batch_size: int = 64, device=None, head_mask=None, ffn_mask=None):
    """(outputs [N, num_labels] float32 on the CPU, labels [N]) in the data's order, in eval mode."""
    device = model_device(model, device)
    model.to(device)
    was_training = model.training
    model.eval()
    pad = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
    masks = dict(head_mask=head_mask, ffn_mask=ffn_mask) if head_mask is not None or ffn_mask is not None else {}
    outputs, labels = [], []
    try:
        for batch in iterate_batches(data, batch_size, pad):
            labels.append(batch.pop("labels"))
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast_for(device):
                out = model(**batch, **masks)
            outputs.append(out.logits.float().cpu())
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("no examples to evaluate")
    return torch.cat(outputs), torch.cat(labels)


def evaluate(model: nn.Module, data, metric=None, batch_size: int = 64, device=None, head_mask=None, ffn_mask=None) -> dict:
    """{metric: value, ..., "loss": mean loss} of `model` on `data` (a split, or an ft.Task: its dev set).

    metric: an ft.Task (its reported metrics), a metric name, or a callable(predictions, labels) -> float
    reported as "score"; default: the Task's when data is one, else accuracy (pearson_spearman for a
    one-output model)."""
    if hasattr(data, "dev") and hasattr(data, "metric"):  # a Task
        metric, data = (data if metric is None else metric), data.dev
    if metric is None:
        metric = "pearson_spearman" if getattr(getattr(model, "config", None), "num_labels", 2) == 1 else "accuracy"
    logits, labels = predict(model, data, batch_size, device, head_mask, ffn_mask)
    if callable(metric):
        metrics = {"score": float(metric(logits, labels))}
    else:
        metrics = compute_metrics(logits, labels, metric)
    metrics["loss"] = float(task_loss(logits, labels))
    return metrics


def model_device(model, device=None) -> torch.device:
    """`device` when given, else where the model's parameters are (the CPU for a model without any)."""
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def autocast_for(device, enabled: bool = True):
    """bf16 autocast on CUDA (weights stay fp32); nothing elsewhere."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
