"""The training configuration (TrainConfig and its presets) and the one training loop every trainer runs.

Defaults (Liang et al. 2021, appendix A.1.2): Adamax (weight decay 0 unless given), lr 5e-5, batch 32,
linear decay with 10 % warm-up, grad-norm clip 1.0, the task's task-layer dropout on the head, at most 6
epochs with early stopping on the dev metric: the best state is kept in memory and restored at the end.
bf16 autocast on CUDA, fp32 on CPU. Every hyper-parameter default lives in TrainConfig / PRESETS here.

run_loop is the loop: it takes its batch source, forward and optimizer step as parameters (LoopParts), so
ft.fine_tune (one model, torch's Adamax) and ft.share_tickets (many tasks, masked Adamax) share it.

Determinism: shuffling uses a torch.Generator seeded with `seed`; dropout draws from torch's global RNG,
which is re-seeded with `seed` inside a forked RNG state (the caller's RNG state is left as it was). The
same seed, model and data give bit-identical weights on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .data.batching import iterate_batches
from .data.metrics import primary_metric
from .evaluation import autocast_for, evaluate, model_device, predict

__all__ = ["TrainConfig", "PRESETS", "TrainResult", "LoopParts", "run_loop", "fine_tune", "evaluate", "predict",
           "linear_schedule", "warmup_steps_for", "seeded", "autocast_for"]

# Named presets: overrides of TrainConfig's defaults (which are the paper's single-task settings, A.1.2).
_QUICK = dict(epochs=1, lr=2e-4, batch_size=16, max_length=64)  # all-MiniLM was trained with mean pooling:
PRESETS: dict[str, dict] = {                                    # its [CLS] classifier needs lr 2e-4 to learn in 1 epoch
    "paper": {},  # A.1.2: single-task fine-tuning and rewinding
    "paper-mtl": {"epochs": 5},  # A.2.1: multi-task training (ticket sharing), at most 5 epochs
    "quick": dict(_QUICK, max_train_examples=2500, max_eval_examples=1000),  # `fastticket search` embedded default
    "quick-share": dict(_QUICK, max_train_examples=1500, max_eval_examples=500),  # per task
    "quick-adapt": dict(_QUICK, max_eval_examples=500),
}
# The authors' released BERT-base scripts (github.com/cliang1453/super-structured-lottery-tickets) train
# every GLUE task with lr 5e-5, batch 32, 6 epochs, except MNLI and QNLI: 3 epochs.
PAPER_TASK_EPOCHS = {"mnli": 3, "mnli-mm": 3, "qnli": 3}


def _int(v, low=1):
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _real(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class TrainConfig:
    """One training configuration, checked when built (one ValueError line naming the bad field).

    epochs, lr, batch_size, warmup (fraction of steps), clip (max grad norm; None/0 off), weight_decay,
    patience (evaluations without improvement before stopping; None never), dropout (task-layer dropout;
    None: the task's), eval_every (optimizer steps; None: every epoch), max_steps (cap; the schedule spans
    it), eval_batch_size (None: 2 x batch_size for search, batch_size for fine_tune). Data budget, used
    where data is loaded (search, CLI; fine_tune ignores it): max_length (tokens), max_train_examples and
    max_eval_examples (seeded subsets; None: all).
    """

    epochs: int = 6
    lr: float = 5e-5
    batch_size: int = 32
    warmup: float = 0.1
    clip: float | None = 1.0
    weight_decay: float = 0.0
    patience: int | None = 2
    dropout: float | None = None
    eval_every: int | None = None
    max_steps: int | None = None
    eval_batch_size: int | None = None
    max_length: int = 128
    max_train_examples: int | None = None
    max_eval_examples: int | None = None

    def __post_init__(self):
        checks = [
            ("epochs", _int(self.epochs), "an integer >= 1"),
            ("lr", _real(self.lr) and self.lr > 0, "a positive float (the paper: 5e-5, 1e-4, 2e-4)"),
            ("batch_size", _int(self.batch_size), "an integer >= 1"),
            ("warmup", _real(self.warmup) and 0 <= self.warmup < 1, "a fraction in [0, 1)"),
            ("clip", self.clip is None or (_real(self.clip) and self.clip >= 0), "None/0 (off) or a positive max norm"),
            ("weight_decay", _real(self.weight_decay) and self.weight_decay >= 0, "a float >= 0"),
            ("patience", self.patience is None or _int(self.patience), "None or an integer >= 1"),
            ("dropout", self.dropout is None or (_real(self.dropout) and 0 <= self.dropout < 1), "None or a float in [0, 1)"),
            ("eval_every", self.eval_every is None or _int(self.eval_every), "None (every epoch) or an integer >= 1"),
            ("max_steps", self.max_steps is None or _int(self.max_steps), "None or an integer >= 1"),
            ("eval_batch_size", self.eval_batch_size is None or _int(self.eval_batch_size), "None or an integer >= 1"),
            ("max_length", _int(self.max_length, 2), "an integer >= 2"),
            ("max_train_examples", self.max_train_examples is None or _int(self.max_train_examples), "None (all) or a positive count"),
            ("max_eval_examples", self.max_eval_examples is None or _int(self.max_eval_examples), "None (all) or a positive count"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: {allowed}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """A named preset of PRESETS with `overrides` (TrainConfig field names) applied."""
        if name not in PRESETS:
            raise ValueError(f"preset {name!r} is unknown; allowed: {sorted(PRESETS)}")
        return cls().replace(**{**PRESETS[name], **overrides})

    @classmethod
    def paper(cls, task: str | None = None, **overrides) -> "TrainConfig":
        """The paper's single-task settings; with a GLUE task name, its epochs in the authors' scripts."""
        epochs = {"epochs": PAPER_TASK_EPOCHS[task]} if task in PAPER_TASK_EPOCHS else {}
        return cls.preset("paper", **{**epochs, **overrides})

    @classmethod
    def quick(cls, **overrides) -> "TrainConfig":
        """The embedded default's budget: about 7 minutes for `fastticket search` on 2 CPU cores."""
        return cls.preset("quick", **overrides)

    def replace(self, **overrides) -> "TrainConfig":
        unknown = sorted(set(overrides) - set(self.to_dict()))
        if unknown:
            raise ValueError(f"unknown training option {unknown[0]!r}; allowed: {sorted(self.to_dict())}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def as_config(config=None, **overrides) -> TrainConfig:
    """A TrainConfig from None (the paper's), a preset name or a TrainConfig, with overrides applied."""
    if config is None:
        config = TrainConfig()
    elif isinstance(config, str):
        config = TrainConfig.preset(config)
    elif not isinstance(config, TrainConfig):
        raise ValueError(f"config of type {type(config).__name__}; allowed: a TrainConfig, a preset name {sorted(PRESETS)} or None")
    return config.replace(**overrides) if overrides else config


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


@dataclass
class LoopParts:
    """What run_loop needs from its caller.

    module: put in train mode for each step; its state_dict is the best state kept. params: what the
    grad-norm clip sees. batches(): one epoch's items in order (called once per epoch). loss(item): the
    scalar training loss of an item. step(item, lr): the optimizer step for that item at learning rate lr.
    evaluate(): dev metrics of the current state (None: no evaluation, no early stopping); metric: the key
    of its result that is maximized. autocast: bf16 autocast around loss() on CUDA.
    """

    module: nn.Module
    params: list
    batches: Callable[[], Iterable[Any]]
    steps_per_epoch: int
    loss: Callable[[Any], torch.Tensor]
    step: Callable[[Any, float], None]
    evaluate: Callable[[], dict] | None = None
    metric: str | None = None
    autocast: bool = True


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


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    full = config.epochs * steps_per_epoch
    return full if config.max_steps is None else min(config.max_steps, full)


def run_loop(config: TrainConfig, parts: LoopParts, *, seed: int = 0, device=None, progress: bool = True,
             desc: str = "fine-tune") -> TrainResult:
    """The one training loop: the schedule, clipping, evaluation, early stopping and the best state."""
    total = total_steps(config, parts.steps_per_epoch)
    factor = linear_schedule(total, warmup_steps_for(total, config.warmup))
    eval_every = config.eval_every or parts.steps_per_epoch
    device = torch.device(device) if device is not None else torch.device("cpu")
    result = TrainResult(best_metric=None, best_step=None, metric=parts.metric if parts.evaluate else None)
    best_state, since_best, step = None, 0, 0
    running = _Running()
    was_training, start = parts.module.training, time.perf_counter()
    bar = _progress(total, progress, desc)
    with seeded(seed, device):
        for _ in range(config.epochs):
            for item in parts.batches():
                lr = config.lr * factor(step)
                running.add(*_one_step(parts, item, lr, config.clip, device))
                step += 1
                bar.update(1)
                last = step >= total
                if step % eval_every == 0 or last:
                    entry = {"step": step, "epoch": step / parts.steps_per_epoch, "lr": lr, **running.take()}
                    if parts.evaluate is not None:
                        entry.update(parts.evaluate())
                        score = entry[parts.metric]
                        if result.best_metric is None or _better(score, result.best_metric):
                            result.best_metric, result.best_step, since_best = score, step, 0
                            best_state = {k: v.detach().clone() for k, v in parts.module.state_dict().items()}
                        else:
                            since_best += 1
                    bar.set_postfix(loss=f"{entry['train_loss']:.4f}")
                    entry["seconds"] = time.perf_counter() - start
                    result.history.append(entry)
                    if config.patience is not None and parts.evaluate and since_best >= config.patience and not last:
                        result.stopped_early = True
                if last or result.stopped_early:
                    break
            if step >= total or result.stopped_early:
                break
    bar.close()
    if best_state is not None:
        parts.module.load_state_dict(best_state)
    parts.module.train(was_training)
    result.steps, result.seconds = step, time.perf_counter() - start
    return result


def _one_step(parts: LoopParts, item, lr: float, clip, device):
    parts.module.train()
    with autocast_for(device, parts.autocast):
        loss = parts.loss(item)
    for p in parts.params:
        p.grad = None
    loss.backward()
    if clip:
        norm = nn.utils.clip_grad_norm_(parts.params, clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parts.params if p.grad is not None]))
    parts.step(item, lr)
    return loss.detach().float(), norm.detach().float()


class _Running:
    """Mean train loss and grad norm since the last evaluation (tensors while running: no sync per step)."""

    def __init__(self):
        self.loss, self.norm, self.count = 0.0, 0.0, 0

    def add(self, loss, norm):
        self.loss, self.norm, self.count = self.loss + loss, self.norm + norm, self.count + 1

    def take(self) -> dict:
        out = {"train_loss": float(self.loss) / self.count, "grad_norm": float(self.norm) / self.count}
        self.loss, self.norm, self.count = 0.0, 0.0, 0
        return out


def fine_tune(model: nn.Module, task_or_train, dev=None, *, config: TrainConfig | str | None = None, metric=None,
              seed: int = 0, device=None, progress: bool = True, head_mask=None, ffn_mask=None,
              **overrides) -> TrainResult:
    """Fine-tunes every trainable parameter of `model` (a compact pruned model simply has fewer).

    task_or_train: an ft.Task (train on .train, evaluate on .dev with the task's metrics, task-layer dropout
    .dropout), or a training datasets.Dataset with `dev` another one (or None: no evaluation, no early
    stopping). config: a TrainConfig, a preset name, or None (the paper's); `overrides` are TrainConfig
    fields (epochs=, lr=, batch_size=, patience=, dropout=, ...). metric: a metric name, or a
    callable(predictions, labels) -> float (higher is better); default: the task's, else accuracy
    (pearson_spearman for a one-output model). dropout (config): the head's dropout (model.head.dropout.p);
    default: the task's, else left as it is. Evaluates after every epoch, or every `eval_every` optimizer
    steps; stops when `patience` evaluations in a row have not improved the best score and restores the
    best state. head_mask / ffn_mask are passed to every forward (training a ticket by masks).
    """
    config = as_config(config, **overrides)
    train, dev, metric, task = _unpack(model, task_or_train, dev, metric)
    if len(train) == 0:
        raise ValueError("the training split is empty")
    dropout = task.dropout if config.dropout is None and task is not None else config.dropout
    if dropout is not None:
        head_dropout = getattr(getattr(model, "head", None), "dropout", None)
        if not isinstance(head_dropout, nn.Dropout):
            raise ValueError(f"dropout={dropout} needs a model with a head dropout module (model.head.dropout); {type(model).__name__} has none")
        head_dropout.p = float(dropout)
    device = model_device(model, device)
    model.to(device)
    pad = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.Adamax(params, lr=config.lr, weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(seed)
    masks = dict(head_mask=head_mask, ffn_mask=ffn_mask) if head_mask is not None or ffn_mask is not None else {}

    def loss(batch):
        return model(**{k: v.to(device, non_blocking=True) for k, v in batch.items()}, **masks).loss

    def step(batch, lr):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()

    name = "score" if callable(metric) else primary_metric(metric)
    check = None if dev is None else (lambda: evaluate(model, dev, metric, batch_size=config.eval_batch_size or config.batch_size,
                                                       device=device, head_mask=head_mask, ffn_mask=ffn_mask))
    parts = LoopParts(model, params, lambda: iterate_batches(train, config.batch_size, pad, generator=shuffle),
                      math.ceil(len(train) / config.batch_size), loss, step, check, name)
    return run_loop(config, parts, seed=seed, device=device, progress=progress)


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


def _better(score: float, best: float) -> bool:
    if not math.isfinite(score):
        return False
    return not math.isfinite(best) or score > best


@contextlib.contextmanager
def seeded(seed: int, device):
    """Runs the block with torch's global RNG (and the device's) seeded, restoring the caller's state after."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, leave=False)
