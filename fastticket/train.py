"""The fine-tuning loop, with the paper's defaults (Liang et al. 2021, appendix A.1.2).

Adamax (weight decay 0 unless given), lr 5e-5, batch 32, linear decay with 10 % warm-up, grad-norm clip
1.0, the task's task-layer dropout on the head, at most 6 epochs with early stopping on the dev metric:
the best state is kept in memory and restored at the end. bf16 autocast on CUDA, fp32 on CPU.

Determinism: shuffling uses a torch.Generator seeded with `seed`; dropout draws from torch's global RNG,
which is re-seeded with `seed` inside a forked RNG state (the caller's RNG state is left as it was). The
same seed, model and data give bit-identical weights on CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .data.batching import iterate_batches
from .data.metrics import compute_metrics, primary_metric
from .models.encoder import task_loss


@dataclass
class TrainResult:
    """best_metric: the best dev score (None without dev data); best_step: the optimizer step it was
    reached at (the restored state); history: one dict per evaluation (step, epoch, lr, train_loss,
    grad_norm, seconds, and the dev metrics); steps: optimizer steps taken; seconds: wall time."""

    best_metric: float | None
    best_step: int | None
    history: list = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    metric: str | None = None
    stopped_early: bool = False


def linear_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The lr factor after `step` optimizer steps: step / warmup while warming up, then a linear decay to
    0 at total_steps (Hugging Face's get_linear_schedule_with_warmup)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def warmup_steps_for(total_steps: int, warmup: float) -> int:
    return math.ceil(warmup * total_steps)


def fine_tune(
    model: nn.Module,
    task_or_train,
    dev=None,
    *,
    metric=None,
    epochs: int = 6,
    lr: float = 5e-5,
    batch_size: int = 32,
    warmup: float = 0.1,
    clip: float | None = 1.0,
    weight_decay: float = 0.0,
    dropout: float | None = None,
    seed: int = 0,
    patience: int | None = 2,
    eval_every: int | None = None,
    max_steps: int | None = None,
    eval_batch_size: int | None = None,
    device=None,
    progress: bool = True,
    head_mask=None,
    ffn_mask=None,
) -> TrainResult:
    """Fine-tunes every trainable parameter of `model` (a compact pruned model simply has fewer).

    task_or_train: an ft.Task (train on .train, evaluate on .dev with the task's metrics, task-layer dropout
    .dropout), or a training datasets.Dataset with `dev` another one (or None: no evaluation, no early
    stopping). metric: a metric name, or a callable(predictions, labels) -> float (higher is better);
    default: the task's, else accuracy (pearson_spearman for a one-output model). dropout: the head's
    dropout (model.head.dropout.p); default: the task's, else left as it is.
    Evaluates after every epoch, or every `eval_every` optimizer steps; stops when `patience` evaluations
    in a row have not improved the best score (None: never) and restores the best state. max_steps caps
    the optimizer steps (the schedule then spans max_steps). head_mask / ffn_mask are passed to every
    forward (training a ticket by masks instead of a compact model).
    """
    train, dev, metric, task = _unpack(model, task_or_train, dev, metric)
    check_train_args(epochs, lr, batch_size, warmup, clip, weight_decay, patience, eval_every, max_steps, dropout)
    if len(train) == 0:
        raise ValueError("the training split is empty")
    if dropout is None and task is not None:
        dropout = task.dropout
    if dropout is not None:
        head_dropout = getattr(getattr(model, "head", None), "dropout", None)
        if not isinstance(head_dropout, nn.Dropout):
            raise ValueError(f"dropout={dropout} needs a model with a head dropout module (model.head.dropout); {type(model).__name__} has none")
        head_dropout.p = float(dropout)
    device = _device(model, device)
    model.to(device)
    pad = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    warm = warmup_steps_for(total, warmup)
    optimizer = torch.optim.Adamax(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total, warm))
    eval_every = eval_every or steps_per_epoch
    name = "score" if callable(metric) else primary_metric(metric)

    result = TrainResult(best_metric=None, best_step=None, metric=name if dev is not None else None)
    best_state, since_best = None, 0
    was_training = model.training
    start = time.perf_counter()
    shuffle = torch.Generator().manual_seed(seed)
    running_loss, running_norm, counted, step = 0.0, 0.0, 0, 0  # tensors while running: no sync per step
    bar = _progress(total, progress)
    with _seeded(seed, device):
        done = False
        for epoch in range(epochs):
            for batch in iterate_batches(train, batch_size, pad, generator=shuffle):
                model.train()
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with _autocast(device):
                    out = model(**batch, head_mask=head_mask, ffn_mask=ffn_mask) if _masked(head_mask, ffn_mask) else model(**batch)
                loss = out.loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    norm = nn.utils.clip_grad_norm_(params, clip)
                else:
                    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
                used_lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                step += 1
                running_loss = running_loss + loss.detach().float()
                running_norm = running_norm + norm.detach().float()
                counted += 1
                bar.update(1)
                last = step >= total
                if step % eval_every == 0 or last:
                    entry = {"step": step, "epoch": step / steps_per_epoch, "lr": used_lr,
                             "train_loss": float(running_loss) / counted, "grad_norm": float(running_norm) / counted}
                    running_loss, running_norm, counted = 0.0, 0.0, 0
                    if dev is not None:
                        metrics = evaluate(model, dev, metric, batch_size=eval_batch_size or batch_size, device=device,
                                           head_mask=head_mask, ffn_mask=ffn_mask)
                        entry.update(metrics)
                        score = metrics[name]
                        if result.best_metric is None or _better(score, result.best_metric):
                            result.best_metric, result.best_step, since_best = score, step, 0
                            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        else:
                            since_best += 1
                        bar.set_postfix(loss=f"{entry['train_loss']:.4f}", **{name: f"{score:.4f}"})
                    else:
                        bar.set_postfix(loss=f"{entry['train_loss']:.4f}")
                    entry["seconds"] = time.perf_counter() - start
                    result.history.append(entry)
                    if patience is not None and dev is not None and since_best >= patience and not last:
                        result.stopped_early = done = True
                        break
                if last:
                    done = True
                    break
            if done:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.train(was_training)
    result.steps = step
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def predict(model: nn.Module, data, batch_size: int = 64, device=None, head_mask=None, ffn_mask=None):
    """(outputs [N, num_labels] float32 on the CPU, labels [N]) in the data's order, in eval mode."""
    device = _device(model, device)
    model.to(device)
    was_training = model.training
    model.eval()
    pad = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
    outputs, labels = [], []
    try:
        for batch in iterate_batches(data, batch_size, pad):
            labels.append(batch.pop("labels"))
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with _autocast(device):
                out = model(**batch, head_mask=head_mask, ffn_mask=ffn_mask) if _masked(head_mask, ffn_mask) else model(**batch)
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


def _unpack(model, task_or_train, dev, metric):
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    task = None
    if hasattr(task_or_train, "train") and hasattr(task_or_train, "metric"):
        task = task_or_train
        if dev is not None:
            raise ValueError("dev= is taken from the Task; pass a training split instead of a Task to give another dev set")
        train, dev = task.train, task.dev
        if num_labels is not None and num_labels != task.num_labels:
            raise ValueError(f"the model has num_labels={num_labels} but task {task.name!r} has {task.num_labels}; load the model with num_labels={task.num_labels}")
        if metric is None:
            metric = task
    else:
        train = task_or_train
        if getattr(train, "column_names", None) is None:
            raise ValueError(f"task_or_train is a {type(train).__name__}; allowed: an ft.Task or a datasets.Dataset of tokenized examples")
        if metric is None:
            metric = "pearson_spearman" if num_labels == 1 else "accuracy"
    if not callable(metric):
        primary_metric(metric)  # a known name, or a Task with a known metric
    return train, dev, metric, task


def check_train_args(epochs, lr, batch_size, warmup, clip, weight_decay, patience, eval_every, max_steps, dropout):
    checks = [
        ("epochs", epochs, isinstance(epochs, int) and epochs >= 1, "an integer >= 1"),
        ("lr", lr, isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr), "a positive float (the paper: 5e-5, 1e-4, 2e-4)"),
        ("batch_size", batch_size, isinstance(batch_size, int) and batch_size >= 1, "an integer >= 1"),
        ("warmup", warmup, isinstance(warmup, (int, float)) and 0 <= warmup < 1, "a fraction in [0, 1)"),
        ("clip", clip, clip is None or (isinstance(clip, (int, float)) and clip >= 0), "None/0 (off) or a positive max norm"),
        ("weight_decay", weight_decay, isinstance(weight_decay, (int, float)) and weight_decay >= 0, "a float >= 0"),
        ("patience", patience, patience is None or (isinstance(patience, int) and patience >= 1), "None or an integer >= 1"),
        ("eval_every", eval_every, eval_every is None or (isinstance(eval_every, int) and eval_every >= 1), "None (every epoch) or an integer >= 1"),
        ("max_steps", max_steps, max_steps is None or (isinstance(max_steps, int) and max_steps >= 1), "None or an integer >= 1"),
        ("dropout", dropout, dropout is None or (isinstance(dropout, (int, float)) and 0 <= dropout < 1), "None or a float in [0, 1)"),
    ]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{name}={value!r}; allowed: {allowed}")


def _device(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _masked(head_mask, ffn_mask) -> bool:
    return head_mask is not None or ffn_mask is not None


def _better(score: float, best: float) -> bool:
    if not math.isfinite(score):
        return False
    return not math.isfinite(best) or score > best


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fine-tune", unit="step", disable=not enabled, leave=False)
