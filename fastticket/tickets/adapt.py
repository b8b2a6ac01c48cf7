"""ft.adapt: domain adaptation of a super ticket or a shared model (Liang et al. 2021, Table 4), and
single-task fine-tuning of a shared model (Table 3, "+ ST fine-tuning").

adapt() fine-tunes a copy of the given encoder on 0.1 %, 1 %, 10 % and 100 % of a new task's training set
(seeded subsets, at least one example) with a fresh task layer, and evaluates each on the new task's dev set
(and its extra dev splits). The encoder is a single-task super ticket (a compact TicketModel, e.g.
ft.load_pruned(run/super_ticket_model)), or the shared encoder of ft.share_tickets (its union, or one task's
ticket with `shared_task=`) with the shared pooler. Only the task layer (the head's `out`) is new: the
pooler is kept, as the encoder it belongs to was trained with it (MT-DNN shares it across tasks).
Training: ft.fine_tune with a TrainConfig (default: the paper's, A.3.2 follows A.1.2).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field, replace

import torch

from ..data.batching import seeded_subset
from ..data.metrics import primary_metric
from ..models import TicketModel
from ..models.encoder import ClassificationHead
from ..rundir import claim
from ..train import TrainConfig, as_config
from ..utils import atomic_write_text
from .trials import check_seed

PAPER_FRACTIONS = (0.001, 0.01, 0.1, 1.0)


def with_task_head(model: TicketModel, num_labels: int, seed: int = 0) -> TicketModel:
    """A copy of `model` with a fresh task layer for `num_labels` outputs, drawn from `seed` (normal(0,
    initializer_range), zero bias); the pooler (everything of the head but `out`) is kept as it is."""
    like = model.embeddings.word.weight
    net = copy.deepcopy(model)
    cfg = replace(net.config, num_labels=num_labels, hf_config=dict(net.config.hf_config))
    head = ClassificationHead(cfg).to(device=like.device, dtype=like.dtype)
    head.load_state_dict({k: v for k, v in model.head.state_dict().items() if not k.startswith("out.")}, strict=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.out.weight.copy_(torch.empty(head.out.weight.shape).normal_(0.0, cfg.initializer_range, generator=gen))
        head.out.bias.zero_()
    net.config, net.head = cfg, head
    return net


def encoder_of(model, shared_task=None) -> TicketModel:
    """The encoder to adapt: a TicketModel as it is; a path (a compact export, a saved shared model or a
    checkpoint) loaded; a shared model (or ShareResult) as one task's ticket (shared_task=) or the union,
    with the shared pooler."""
    from .sharing import SharedModel, ShareResult

    if isinstance(model, ShareResult):
        model = model.model
    if isinstance(model, SharedModel):
        if shared_task is None:
            return model.task_model(model.task_names[0], ticket=False)  # the union; the head is replaced
        return model.task_model(shared_task, ticket=True)
    if isinstance(model, (str, os.PathLike)) and os.path.isfile(os.path.join(os.fspath(model), "shared_model.json")):
        return encoder_of(SharedModel.load(os.fspath(model)), shared_task)
    if shared_task is not None:
        raise ValueError("shared_task= picks a task's ticket of a shared model; the model given is not one")
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        from ..models import load_model, load_pruned

        return load_pruned(path) if os.path.isfile(os.path.join(path, "fastticket_config.json")) else load_model(path)
    if not isinstance(model, TicketModel):
        raise ValueError(f"model must be an ft.TicketModel, a shared model / ShareResult, or a path; got {type(model).__name__}")
    return model


@dataclass
class AdaptResult:
    rows: list
    config: dict = field(default_factory=dict)

    def table(self) -> str:
        metric = self.config.get("metric", "accuracy")
        splits = sorted({s for r in self.rows for s in r.get("extra_scores", {})})
        lines = [f"{'fraction':>9s} {'examples':>9s} {'seed':>5s} {metric:>16s}" + "".join(f" {s:>16s}" for s in splits)
                 + f" {'steps':>6s} {'seconds':>8s}"]
        for r in self.rows:
            extra = "".join(f" {r['extra_scores'].get(s, float('nan')):16.4f}" for s in splits)
            lines.append(f"{100 * r['fraction']:8.1f}% {r['examples']:9d} {r['seed']:5d} {r['score']:16.4f}{extra} "
                         f"{r['steps']:6d} {r['seconds']:8.1f}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "rows": self.rows}, indent=1, sort_keys=True)

    def save(self, out_dir: str) -> None:
        atomic_write_text(os.path.join(out_dir, "results.json"), self.to_json())


def adapt(
    model,
    task,
    fractions=PAPER_FRACTIONS,
    *,
    shared_task: str | None = None,
    seeds=(0,),
    config: TrainConfig | str | None = None,
    device=None,
    out_dir: str | None = None,
    progress: bool = True,
    **train_options,
) -> AdaptResult:
    """Fine-tunes the encoder of `model` on each fraction of `task`'s training set; see the module docstring.
    config: a TrainConfig, a preset name or None (the paper's); train_options override its fields (epochs=,
    lr=, batch_size=, patience=, ...). Returns one row per (fraction, seed): examples, dev metrics, score,
    extra dev metrics, steps, seconds."""
    from ..train import evaluate, fine_tune

    config = as_config(config, **train_options)
    fractions = tuple(fractions)
    if not fractions or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions={fractions!r}; allowed: fractions in (0, 1], e.g. {PAPER_FRACTIONS}")
    seeds = tuple(check_seed(s, "seeds value") for s in seeds)
    if len(set(fractions)) != len(fractions) or not seeds or len(set(seeds)) != len(seeds):  # no run trained twice
        raise ValueError(f"fractions={fractions!r}, seeds={seeds!r}; allowed: distinct fractions and distinct seeds, "
                         f"at least one of each")
    if not (hasattr(task, "train") and hasattr(task, "dev")):
        raise ValueError(f"task must be an ft.Task; got {type(task).__name__}")
    if len(task.train) == 0 or len(task.dev) == 0:
        raise ValueError(f"task {task.name!r} is empty (train {len(task.train)}, dev {len(task.dev)} examples)")
    encoder = encoder_of(model, shared_task)
    if out_dir is not None:  # never into the user's files or another command's run (rundir), before training
        claim(out_dir, "adapt")
    rows = []
    for seed in seeds:
        for fraction in fractions:
            n = max(1, math.ceil(fraction * len(task.train)))
            data = seeded_subset(task.train, n, seed=seed)
            net = with_task_head(encoder, task.num_labels, seed)
            start = time.perf_counter()
            trial = config if config.dropout is not None else config.replace(dropout=task.dropout)
            res = fine_tune(net, data, task.dev, config=trial, metric=task, seed=seed, device=device, progress=progress)
            batch_size = config.eval_batch_size or 2 * config.batch_size
            metrics = evaluate(net, task, batch_size=batch_size, device=device)
            extra = {s: evaluate(net, d, metric=task, batch_size=batch_size, device=device)
                     for s, d in sorted((getattr(task, "extra_dev", None) or {}).items())}
            rows.append({"fraction": float(fraction), "examples": len(data), "seed": int(seed), "dev": metrics,
                         "score": metrics[primary_metric(task)], "extra": extra,
                         "extra_scores": {s: m[primary_metric(task)] for s, m in extra.items()}, "steps": res.steps,
                         "seconds": round(time.perf_counter() - start, 2)})
    run = {"task": task.name, "metric": primary_metric(task), "fractions": list(fractions), "seeds": list(seeds),
           **config.to_dict(), "shared_task": shared_task,
           "heads_kept": int(encoder.kept_heads_mask().sum()), "ffn_kept": int(encoder.kept_ffn_mask().sum())}
    result = AdaptResult(rows, run)
    if out_dir is not None:
        result.save(out_dir)
    return result


def fine_tune_shared(shared, name: str, task, *, ticket: bool = True, **kwargs):
    """Table 3's "+ ST fine-tuning": task `name`'s standalone model from the shared model (its ticket, or the
    whole union with ticket=False), fine-tuned on `task` alone with ft.fine_tune. Returns (model, TrainResult)."""
    from ..train import fine_tune
    from .sharing import ShareResult

    if isinstance(shared, ShareResult):
        shared = shared.model
    net = shared.task_model(name, ticket=ticket)
    return net, fine_tune(net, task, **kwargs)
