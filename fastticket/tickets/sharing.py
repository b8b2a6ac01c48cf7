"""ft.share_tickets: ticket sharing for multi-task learning (Liang et al. 2021, §4, Algorithm 1).

One shared encoder (the union of the tasks' super tickets, the pooler shared inside it as in MT-DNN) and
one task layer (dropout + linear) per task; each task i has its super ticket ω_i and a batch of task i runs
and updates only M(θ, ω_i) (shared_model.py). Batches are sampled across tasks in proportion to their
sizes (MT-DNN's sampler: every task's shuffled batches, then the batch list shuffled). Training runs the
one training loop of ft.fine_tune (train.run_loop) with a TrainConfig (default: the paper's multi-task
settings, A.2.1: Adamax, lr 5e-5, batch 32, at most 5 epochs with early stopping, clip 1.0, 10 % warm-up).

Exactness (the default): θ_i is what ω_i keeps — the Q/K/V rows and W_O columns of its heads, its FFNs,
and everything no ticket masks (embeddings, LayerNorms, W_O biases, the shared pooler, task i's layer). A
task-i step is a masked Adamax step (masked_adamax.py): nothing ω_i masks moves, optimizer state included.
compat="mtdnn" reproduces the authors' code: masking by multiplication (the whole union computed, masks
0/1) and one dense torch.optim.Adamax step, so momentum and weight decay move weights the current task
masks.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from ..data.batching import batch_of_rows, iterate_batches
from ..data.metrics import compute_metrics, primary_metric
from ..models import TicketModel
from ..models.encoder import task_loss
from ..train import LoopParts, TrainConfig, as_config, run_loop, total_steps
from ..rundir import claim
from ..utils import atomic_write_text, resolve_device
from .masked_adamax import MaskedAdamax, Slice, live_slices, mtdnn_batches
from .shared_model import COMPAT, SharedModel, TaskLayer, build_shared, check_share_inputs, union_ticket

__all__ = ["share_tickets", "ShareResult", "evaluate_task", "SharedModel", "TaskLayer", "build_shared", "check_share_inputs",
           "union_ticket", "MaskedAdamax", "Slice", "live_slices", "mtdnn_batches", "COMPAT"]


@dataclass
class ShareResult:
    """metrics: task -> dev metrics under its own ticket (the restored best state); extra: task -> {extra
    dev split (MNLI's dev_mismatched): metrics}; model: the SharedModel."""

    metrics: dict
    model: SharedModel
    history: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    out_dir: str | None = None
    extra: dict = field(default_factory=dict)

    def table(self) -> str:
        lines = [f"{'task':<26s} {'metric':<16s} {'score':>7s} {'heads':>7s} {'ffn':>5s} {'examples':>9s}"]
        for name, m in self.metrics.items():
            t = self.model.tickets[name]
            metric = self.config.get("metrics", {}).get(name, "accuracy")
            lines.append(f"{name:<26s} {metric:<16s} {m[metric]:7.4f} {int(t.heads.sum()):>3d}/{t.heads.numel():<3d} "
                         f"{int(t.ffn.sum()):>2d}/{t.ffn.numel():<2d} {self.config.get('train_examples', {}).get(name, 0):>9d}")
            for split, e in self.extra.get(name, {}).items():
                lines.append(f"{name + ':' + split:<26s} {metric:<16s} {e[metric]:7.4f}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "tasks": self.metrics, "extra_dev": self.extra, "history": self.history},
                          indent=1, sort_keys=True)

    def save(self, out_dir: str) -> None:
        """out_dir/results.json, config.json, the shared model (shared_encoder/, task_heads.safetensors,
        tickets/<task>.json, shared_model.json)."""
        self.model.save(out_dir)
        atomic_write_text(os.path.join(out_dir, "config.json"), json.dumps(self.config, indent=1, sort_keys=True))
        atomic_write_text(os.path.join(out_dir, "results.json"), self.to_json())
        self.out_dir = out_dir

    @classmethod
    def load(cls, out_dir: str) -> "ShareResult":
        try:
            with open(os.path.join(out_dir, "results.json"), encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{out_dir!r} is not a ticket-sharing run directory ({exc})") from None
        return cls(d["tasks"], SharedModel.load(out_dir), d.get("history", []), d.get("config", {}), out_dir,
                   d.get("extra_dev", {}))


def share_tickets(model, tasks: dict, tickets: dict, *, config: TrainConfig | str | None = None, seed: int = 0,
                  compat: str | None = None, device=None, backend: str = "auto", projection_backend: str = "auto",
                  out_dir: str | None = None, progress: bool = True, **train_options) -> ShareResult:
    """Multi-task training with ticket sharing; see the module docstring.

    model: a (pre-trained) ft.TicketModel or a checkpoint dir / hub name; tasks: {name: ft.Task};
    tickets: {name: ft.Ticket} over the model's [L, H] / [L]. config: a TrainConfig, a preset name or None
    ("paper-mtl"); train_options override its fields (epochs=, lr=, batch_size=, weight_decay=, patience=,
    ...; dropout= replaces every task's). After every epoch each task is evaluated on its dev set (and its
    extra dev splits) under its own ticket; the state with the best mean primary dev score is kept. Returns
    the per-task dev metrics and the shared model; out_dir: save it there (ShareResult.load reads it back).
    """
    from ..models import load_model

    config = as_config("paper-mtl" if config is None else config, **train_options)
    if compat not in COMPAT:
        raise ValueError(f"compat={compat!r}; allowed: None (exact ticket sharing) or 'mtdnn' (the authors' masking)")
    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model), seed=seed, backend=backend)
    if not isinstance(model, TicketModel):
        raise ValueError(f"model must be an ft.TicketModel or a checkpoint path; got {type(model).__name__}")
    check_share_inputs(model, tasks, tickets)
    device = resolve_device(device) if device is not None else model.embeddings.word.weight.device
    if out_dir is not None:  # never into the user's files or another command's run (rundir), before training
        claim(out_dir, "share")
    shared = build_shared(model, tasks, tickets, seed, projection_backend).to(device)
    if config.dropout is not None:
        for layer in shared.heads.values():
            layer.dropout.p = config.dropout
    start = time.perf_counter()
    parts = _loop_parts(shared, tasks, config, seed, compat, device)
    result = run_loop(config, parts, seed=seed, device=device, progress=progress, desc="share tickets")
    shared.eval()
    best = next(h for h in result.history if h["step"] == result.best_step)
    sizes = {n: len(t.train) for n, t in tasks.items()}
    run = {"tasks": list(tasks), "metrics": {n: primary_metric(t) for n, t in tasks.items()}, **config.to_dict(),
           "seed": seed, "compat": compat, "steps": result.steps, "total_steps": total_steps(config, parts.steps_per_epoch),
           "train_examples": sizes, "dev_examples": {n: len(t.dev) for n, t in tasks.items()},
           "union": {"heads": int(shared.encoder.kept_heads_mask().sum()), "ffn": int(shared.encoder.kept_ffn_mask().sum())},
           "model_name": model.name_or_path, "seconds": round(time.perf_counter() - start, 2)}
    out = ShareResult(best["dev"], shared, result.history, run, extra=best["extra_dev"])
    if out_dir is not None:
        out.save(out_dir)
    return out


def _loop_parts(shared: SharedModel, tasks: dict, config: TrainConfig, seed: int, compat, device) -> LoopParts:
    """run_loop's pieces for ticket sharing: MT-DNN batches, the task's forward, masked (or dense) Adamax."""
    pad = shared.encoder.config.pad_token_id
    sizes = {n: len(t.train) for n, t in tasks.items()}
    params = [p for p in shared.parameters() if p.requires_grad]
    if compat == "mtdnn":
        dense = torch.optim.Adamax(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        masked = MaskedAdamax(lr=config.lr, weight_decay=config.weight_decay)
        slices = {n: live_slices(shared, n) for n in tasks}
    shuffle = torch.Generator().manual_seed(seed)
    losses = defaultdict(list)

    def loss(item):
        name, rows = item
        batch = {k: v.to(device) for k, v in batch_of_rows(tasks[name].train, rows, pad).items()}
        value = shared(name, **batch, compat=compat)[1]
        losses[name].append(value.detach())
        return value

    def step(item, lr):
        if compat == "mtdnn":
            for group in dense.param_groups:
                group["lr"] = lr
            dense.step()
        else:
            masked.step(slices[item[0]], lr)

    def check():
        batch_size = config.eval_batch_size or 2 * config.batch_size
        dev = {n: evaluate_task(shared, n, t, batch_size, device, compat) for n, t in tasks.items()}
        extra = {n: {s: evaluate_task(shared, n, t, batch_size, device, compat, split=s) for s in sorted(t.extra_dev or {})}
                 for n, t in tasks.items() if getattr(t, "extra_dev", None)}
        task_loss_means = {n: float(torch.stack(v).mean()) for n, v in losses.items() if v}
        losses.clear()
        score = sum(dev[n][primary_metric(t)] for n, t in tasks.items()) / len(tasks)
        return {"mean_score": score, "dev": dev, "extra_dev": extra, "task_train_loss": task_loss_means}

    per_epoch = sum(math.ceil(n / config.batch_size) for n in sizes.values())
    return LoopParts(shared, params, lambda: mtdnn_batches(sizes, config.batch_size, shuffle), per_epoch, loss, step,
                     check, "mean_score")


@torch.no_grad()
def evaluate_task(shared: SharedModel, name: str, task, batch_size: int = 64, device=None, compat=None,
                  split: str | None = None) -> dict:
    """Metrics of task `name` under its own ticket on its dev set, or on the extra dev split `split`
    (task.extra_dev[split]), like ft.evaluate."""
    was = shared.training
    shared.eval()
    device = device or shared.encoder.embeddings.word.weight.device
    data = task.dev if split is None else task.extra_dev[split]
    logits, labels = [], []
    try:
        for batch in iterate_batches(data, batch_size, shared.encoder.config.pad_token_id):
            labels.append(batch.pop("labels"))
            out, _ = shared(name, **{k: v.to(device) for k, v in batch.items()}, compat=compat)
            logits.append(out.float().cpu())
    finally:
        shared.train(was)
    logits, labels = torch.cat(logits), torch.cat(labels)
    metrics = compute_metrics(logits, labels, task)
    metrics["loss"] = float(task_loss(logits, labels))
    return metrics
