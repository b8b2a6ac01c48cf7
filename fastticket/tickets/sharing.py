"""ft.share_tickets: ticket sharing for multi-task learning (Liang et al. 2021, §4, Algorithm 1).

One shared encoder, one task head per task (the model's head copied: BERT's pre-trained pooler, then a
task layer initialized from the seed), and each task i has its super ticket ω_i. The encoder is physically
the *union* of the tickets (ft.rewind with the union ticket): a structure in no task's ticket is pruned
outright. A batch of task i runs only the subnetwork M(θ, ω_i): its Q/K/V/W_O projections go through head
tables (fastticket.ops.head_projection: only task i's heads' weight slices are read, and weight gradients
are written only there) and the FFNs ω_i prunes are skipped (the layer output is LayerNorm(x), as §1
defines a pruned FFN). Batches are sampled across tasks in proportion to their sizes (MT-DNN's sampler:
every task's shuffled batches, then the batch list shuffled).

Exactness (the default): θ_i is what ω_i keeps — the Q/K/V rows and W_O columns of its heads, its FFNs,
and everything no ticket masks (embeddings, LayerNorms, W_O biases, task i's head). A task-i step is a
*masked Adamax step* (MaskedAdamax): gradient, weight decay, exp_avg, exp_inf and the weight update are
computed on θ_i's slices only; every other value and every other optimizer-state entry keeps its bits.
Bias correction uses per-slice step counts (one per head slice, one per parameter otherwise), so each
slice runs exactly the Adamax it would run alone over the batches that use it; a slice no batch has used
yet has step 0. compat="mtdnn" reproduces the authors' code: masking by multiplication (the whole union
computed, masks 0/1) and one dense torch.optim.Adamax step, so momentum and weight decay move weights
the current task masks.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..data.batching import batch_of_rows, iterate_batches
from ..data.metrics import compute_metrics, primary_metric
from ..models import TicketModel
from ..models.encoder import ClassificationHead, right_padding_lengths, task_loss
from ..utils import atomic_write_text
from .rewind import rewind
from .ticket import Ticket

COMPAT = (None, "mtdnn")
HEADS_FILE = "task_heads.safetensors"
ENCODER_DIR = "shared_encoder"


# ----------------------------------------------------------------------------------------- validation


def check_share_inputs(model, tasks, tickets) -> None:
    """One ValueError for: no tasks, a task without a ticket (or a ticket without a task), a ticket whose
    shape does not match the model, a ticket keeping what the model does not hold, an empty task."""
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError("tasks must be a non-empty dict {name: ft.Task}")
    if not isinstance(tickets, dict):
        raise ValueError(f"tickets must be a dict {{name: ft.Ticket}}; got {type(tickets).__name__}")
    missing = [n for n in tasks if n not in tickets]
    if missing:
        raise ValueError(f"task {missing[0]!r} has no ticket; tickets given for {sorted(tickets)}")
    extra = [n for n in tickets if n not in tasks]
    if extra:
        raise ValueError(f"ticket {extra[0]!r} names no task; tasks: {sorted(tasks)}")
    cfg = model.config
    for name, ticket in tickets.items():
        if not isinstance(ticket, Ticket):
            raise ValueError(f"ticket of task {name!r} is a {type(ticket).__name__}, not an ft.Ticket")
        if tuple(ticket.heads.shape) != (cfg.num_layers, cfg.num_heads):
            raise ValueError(f"ticket of task {name!r} has heads {tuple(ticket.heads.shape)}; the model has "
                             f"[L, H]=({cfg.num_layers}, {cfg.num_heads}) (L layers, H heads per layer)")
        outside = ticket.heads & ~model.kept_heads_mask()
        if outside.any() or (ticket.ffn & ~model.kept_ffn_mask()).any():
            raise ValueError(f"ticket of task {name!r} keeps heads or FFNs the (compact) model does not hold")
    for name, task in tasks.items():
        if not (hasattr(task, "train") and hasattr(task, "dev") and hasattr(task, "num_labels")):
            raise ValueError(f"task {name!r} is a {type(task).__name__}, not an ft.Task")
        if len(task.train) == 0 or len(task.dev) == 0:
            raise ValueError(f"task {name!r} is empty (train {len(task.train)}, dev {len(task.dev)} examples)")


def union_ticket(tickets: dict) -> Ticket:
    ts = list(tickets.values())
    heads, ffn = ts[0].heads.clone(), ts[0].ffn.clone()
    for t in ts[1:]:
        heads |= t.heads
        ffn |= t.ffn
    return Ticket(heads, ffn, {"kind": "union", "tasks": sorted(tickets)})


# ------------------------------------------------------------------------------------------ the model


class SharedModel(nn.Module):
    """The shared encoder (a compact TicketModel holding the union of the tickets) + one head per task.

    tickets: name -> Ticket in the original [L, H] / [L] layout. tables(name): per layer the positions of
    the task's heads among the heads the encoder holds (the head table).
    """

    def __init__(self, encoder: TicketModel, heads: dict, tickets: dict, projection_backend: str = "auto"):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.tickets = dict(tickets)
        self.projection_backend = projection_backend
        self._tables: dict = {}

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def tables(self, name: str, device=None) -> list[torch.Tensor]:
        device = torch.device(device or self.encoder.embeddings.word.weight.device)
        key = (name, str(device))
        if key not in self._tables:
            ticket, cfg = self.tickets[name], self.encoder.config
            self._tables[key] = [
                torch.tensor([p for p, h in enumerate(cfg.layer_heads(l)) if bool(ticket.heads[l, h])], dtype=torch.long,
                             device=device)
                for l in range(cfg.num_layers)
            ]
        return self._tables[key]

    def task_ffn(self, name: str) -> list[bool]:
        cfg = self.encoder.config
        return [cfg.layer_has_ffn(l) and bool(self.tickets[name].ffn[l]) for l in range(cfg.num_layers)]

    def forward(self, task: str, input_ids, attention_mask=None, token_type_ids=None, labels=None, *,
                compat: str | None = None, backend: str | None = None):
        """logits (and loss) of task `task` under its own ticket. compat="mtdnn": the whole union computed,
        the ticket applied as 0/1 masks (the authors' way); otherwise head tables, pruned FFNs skipped."""
        if task not in self.heads:
            raise ValueError(f"task {task!r} is not one of the shared model's tasks {self.task_names}")
        enc, backend = self.encoder, backend or self.encoder.backend
        batch, seq = input_ids.shape
        lengths = right_padding_lengths(attention_mask, batch, seq)
        h = enc.embeddings(input_ids, token_type_ids)
        if compat == "mtdnn":
            ticket = self.tickets[task]
            dtype, device = h.dtype, h.device
            head_mask, ffn_mask = ticket.head_mask(dtype, device), ticket.ffn_mask(dtype, device)
            for l, layer in enumerate(enc.layers):
                h = layer(h, lengths, head_mask[l], ffn_mask[l], None, None, backend)
        else:
            for layer, table, ffn in zip(enc.layers, self.tables(task, h.device), self.task_ffn(task)):
                h = layer.attention(h, lengths, None, None, backend, table=table, projection_backend=self.projection_backend)
                h = layer.ffn(h, None, None, backend) if ffn else layer.ffn.norm(h)
        logits = self.heads[task](h)
        return logits, (task_loss(logits, labels) if labels is not None else None)

    def task_model(self, name: str, ticket: bool = True) -> TicketModel:
        """A standalone TicketModel for task `name` (copied): physically its ticket (ticket=True) or the whole
        shared union; its head is the task's head. Fine-tune it with ft.fine_tune (Table 3, "+ ST fine-tuning")."""
        if name not in self.heads:
            raise ValueError(f"task {name!r} is not one of the shared model's tasks {self.task_names}")
        head = self.heads[name]
        net = copy.deepcopy(self.encoder)
        net.config = replace(net.config, num_labels=head.out.out_features, hf_config=dict(net.config.hf_config))
        net.head = copy.deepcopy(head)
        return rewind(net, self.tickets[name]) if ticket else net

    # -------------------------------------------------------------------------------------- save / load

    def save(self, directory: str) -> None:
        from safetensors.torch import save_file

        from ..models import export

        os.makedirs(directory, exist_ok=True)
        export(self.encoder, os.path.join(directory, ENCODER_DIR), format="compact")
        tensors = {f"{n}.{k}": v.detach().cpu().contiguous() for n, head in self.heads.items() for k, v in head.state_dict().items()}
        save_file(tensors, os.path.join(directory, HEADS_FILE), {"format": "pt"})
        for n, t in self.tickets.items():
            t.save(os.path.join(directory, "tickets", f"{n}.json"))
        meta = {"format": "fastticket.shared", "version": 1, "tasks": {
            n: {"num_labels": head.out.out_features, "dropout": head.dropout.p} for n, head in self.heads.items()}}
        atomic_write_text(os.path.join(directory, "shared_model.json"), json.dumps(meta, indent=1, sort_keys=True))

    @classmethod
    def load(cls, directory: str, backend: str = "auto") -> "SharedModel":
        from safetensors.torch import load_file

        from ..models import load_pruned

        try:
            with open(os.path.join(directory, "shared_model.json"), encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("format") != "fastticket.shared":
                raise ValueError(f"format is {meta.get('format')!r}, not 'fastticket.shared'")
            encoder = load_pruned(os.path.join(directory, ENCODER_DIR), backend=backend)
            tensors = load_file(os.path.join(directory, HEADS_FILE))
            heads, tickets = {}, {}
            for n, info in meta["tasks"].items():
                head = ClassificationHead(replace(encoder.config, num_labels=int(info["num_labels"])))
                head.load_state_dict({k[len(n) + 1:]: v for k, v in tensors.items() if k.startswith(n + ".")})
                head.dropout.p = float(info["dropout"])
                heads[n] = head
                tickets[n] = Ticket.load(os.path.join(directory, "tickets", f"{n}.json"))
        except (OSError, KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(f"{directory!r} is not a saved shared model ({exc})") from None
        return cls(encoder, heads, tickets).eval()


def build_shared(model: TicketModel, tasks: dict, tickets: dict, seed: int = 0, projection_backend: str = "auto") -> SharedModel:
    """The shared model at `model`'s (pre-trained) values: the union encoder and a fresh head per task
    (the model's head copied — BERT keeps its pre-trained pooler — and the task layer drawn from `seed`)."""
    check_share_inputs(model, tasks, tickets)
    encoder = rewind(model, union_ticket(tickets))
    heads = {}
    for i, (name, task) in enumerate(tasks.items()):
        head = ClassificationHead(replace(model.config, num_labels=task.num_labels))
        head.load_state_dict({k: v for k, v in model.head.state_dict().items() if not k.startswith("out.")}, strict=False)
        gen = torch.Generator().manual_seed(seed + 1000 * i)
        layers = (head.out,) if model.config.family == "bert" else (head.dense, head.out)
        with torch.no_grad():
            for lin in layers:
                lin.weight.copy_(torch.empty(lin.weight.shape).normal_(0.0, model.config.initializer_range, generator=gen))
                lin.bias.zero_()
        head.dropout.p = float(getattr(task, "dropout", head.dropout.p))
        heads[name] = head.to(device=model.embeddings.word.weight.device, dtype=model.embeddings.word.weight.dtype)
    return SharedModel(encoder, heads, tickets, projection_backend)


# -------------------------------------------------------------------------------------- the optimizer


@dataclass
class Slice:
    """The live part of a parameter for one task: all of it (dim None) or `index` along `dim`."""

    param: nn.Parameter
    dim: int | None = None
    index: torch.Tensor | None = None


def live_slices(shared: SharedModel, name: str) -> list[Slice]:
    """θ_i: the parameters (and head slices) a task-`name` batch may change."""
    enc, out = shared.encoder, []
    d = enc.config.head_dim
    out += [Slice(p) for p in enc.embeddings.parameters()]
    for layer, table, ffn in zip(enc.layers, shared.tables(name), shared.task_ffn(name)):
        att = layer.attention
        if att.num_heads:
            rows = (table[:, None] * d + torch.arange(d, device=table.device)[None, :]).reshape(-1)
            for lin in (att.q, att.k, att.v):
                out += [Slice(lin.weight, 0, rows), Slice(lin.bias, 0, rows)]
            out.append(Slice(att.o.weight, 1, rows))
        out += [Slice(att.o.bias)] + [Slice(p) for p in att.norm.parameters()]
        if ffn:
            out += [Slice(p) for p in (layer.ffn.up.weight, layer.ffn.up.bias, layer.ffn.down.weight, layer.ffn.down.bias)]
        out += [Slice(p) for p in layer.ffn.norm.parameters()]
    out += [Slice(p) for p in shared.heads[name].parameters()]
    return [s for s in out if s.param.requires_grad]


class MaskedAdamax:
    """torch.optim.Adamax's update (same formulas, same order of operations) applied to live slices only.

    state[p]: exp_avg, exp_inf like torch's, and `step`: per slice (a [size along dim] int64 tensor for
    head-sliced parameters, an int otherwise) for the bias correction 1 - β1^step. Values, moments and
    steps outside the live slices are never written.
    """

    def __init__(self, lr: float = 2e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.state: dict = {}

    def _state(self, s: Slice) -> dict:
        p = s.param
        st = self.state.get(p)
        if st is None:
            st = {"exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                  "exp_inf": torch.zeros_like(p, memory_format=torch.preserve_format),
                  "step": 0 if s.dim is None else torch.zeros(p.shape[s.dim], dtype=torch.long, device=p.device)}
            self.state[p] = st
        return st

    @torch.no_grad()
    def step(self, slices: list[Slice], lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        beta1, beta2 = self.betas
        for s in slices:
            p = s.param
            if p.grad is None:
                continue
            st = self._state(s)
            if s.dim is None:  # exactly torch.optim.Adamax's single-tensor step
                grad = p.grad
                st["step"] += 1
                if self.weight_decay:
                    grad = grad.add(p, alpha=self.weight_decay)
                st["exp_avg"].lerp_(grad, 1 - beta1)
                torch.maximum(st["exp_inf"].mul_(beta2), grad.abs().add_(self.eps), out=st["exp_inf"])  # torch's amax
                clr = lr / (1 - beta1 ** st["step"])
                p.addcdiv_(st["exp_avg"], st["exp_inf"], value=-clr)
                continue
            dim, idx = s.dim, s.index
            w = p.index_select(dim, idx)
            grad = p.grad.index_select(dim, idx)
            m, u = st["exp_avg"].index_select(dim, idx), st["exp_inf"].index_select(dim, idx)
            step = st["step"].index_select(0, idx) + 1
            st["step"].index_copy_(0, idx, step)
            if self.weight_decay:
                grad = grad.add(w, alpha=self.weight_decay)
            m.lerp_(grad, 1 - beta1)
            u = torch.maximum(u.mul_(beta2), grad.abs().add_(self.eps))
            shape = [1] * w.dim()
            shape[dim] = -1
            clr = (lr / (1 - beta1 ** step.double())).to(w.dtype).view(shape)
            w.sub_(clr * (m / u))
            p.index_copy_(dim, idx, w)
            st["exp_avg"].index_copy_(dim, idx, m)
            st["exp_inf"].index_copy_(dim, idx, u)


# ------------------------------------------------------------------------------------------- training


def mtdnn_batches(sizes: dict, batch_size: int, generator: torch.Generator) -> list[tuple[str, list[int]]]:
    """MT-DNN's multi-task sampler for one epoch: each task's rows shuffled and cut into batches, then all
    batches shuffled together, so tasks are visited in proportion to their number of batches."""
    batches = []
    for name, n in sizes.items():
        order = torch.randperm(n, generator=generator).tolist()
        batches += [(name, order[i:i + batch_size]) for i in range(0, n, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@dataclass
class ShareResult:
    """metrics: task -> dev metrics under its own ticket (the restored best state); model: the SharedModel."""

    metrics: dict
    model: SharedModel
    history: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    out_dir: str | None = None

    def table(self) -> str:
        lines = [f"{'task':<18s} {'metric':<10s} {'score':>7s} {'heads':>7s} {'ffn':>5s} {'examples':>9s}"]
        for name, m in self.metrics.items():
            t = self.model.tickets[name]
            metric = self.config.get("metrics", {}).get(name, "accuracy")
            lines.append(f"{name:<18s} {metric:<10s} {m[metric]:7.4f} {int(t.heads.sum()):>3d}/{t.heads.numel():<3d} "
                         f"{int(t.ffn.sum()):>2d}/{t.ffn.numel():<2d} {self.config.get('train_examples', {}).get(name, 0):>9d}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "tasks": self.metrics, "history": self.history}, indent=1, sort_keys=True)

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
        return cls(d["tasks"], SharedModel.load(out_dir), d.get("history", []), d.get("config", {}), out_dir)


def share_tickets(
    model,
    tasks: dict,
    tickets: dict,
    *,
    epochs: int = 3,
    lr: float = 5e-5,
    batch_size: int = 32,
    warmup: float = 0.1,
    clip: float | None = 1.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    patience: int | None = None,
    max_steps: int | None = None,
    compat: str | None = None,
    device=None,
    backend: str = "auto",
    projection_backend: str = "auto",
    eval_batch_size: int | None = None,
    out_dir: str | None = None,
    progress: bool = True,
) -> ShareResult:
    """Multi-task training with ticket sharing; see the module docstring.

    model: a (pre-trained) ft.TicketModel or a checkpoint dir / hub name; tasks: {name: ft.Task};
    tickets: {name: ft.Ticket} over the model's [L, H] / [L]. Training follows ft.fine_tune's recipe
    (Adamax, linear warm-up/decay over all steps, grad-norm clip, dropout from each task): after every
    epoch each task is evaluated on its dev set under its own ticket and the state with the best mean
    primary score is kept (patience: stop after that many epochs without improvement). Returns the
    per-task dev metrics and the shared model; out_dir: save it there (ShareResult.load reads it back).
    """
    from ..models import load_model
    from ..train import TrainConfig, linear_schedule, seeded, warmup_steps_for

    if compat not in COMPAT:
        raise ValueError(f"compat={compat!r}; allowed: None (exact ticket sharing) or 'mtdnn' (the authors' masking)")
    TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, warmup=warmup, clip=clip, weight_decay=weight_decay,
                patience=patience, max_steps=max_steps)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model), seed=seed, backend=backend)
    if not isinstance(model, TicketModel):
        raise ValueError(f"model must be an ft.TicketModel or a checkpoint path; got {type(model).__name__}")
    check_share_inputs(model, tasks, tickets)
    device = torch.device(device) if device is not None else model.embeddings.word.weight.device
    shared = build_shared(model, tasks, tickets, seed, projection_backend).to(device)
    pad = model.config.pad_token_id

    sizes = {n: len(t.train) for n, t in tasks.items()}
    per_epoch = sum(math.ceil(n / batch_size) for n in sizes.values())
    total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    schedule = linear_schedule(total, warmup_steps_for(total, warmup))
    params = [p for p in shared.parameters() if p.requires_grad]
    if compat == "mtdnn":
        dense = torch.optim.Adamax(params, lr=lr, weight_decay=weight_decay)
    else:
        masked = MaskedAdamax(lr=lr, weight_decay=weight_decay)
        slices = {n: live_slices(shared, n) for n in tasks}
    shuffle = torch.Generator().manual_seed(seed)
    history, best, best_state, since_best, step = [], None, None, 0, 0
    start = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="share tickets", unit="step", disable=not progress, leave=False)
    with seeded(seed, device):
        for epoch in range(epochs):
            losses = {n: [] for n in tasks}
            for name, rows in mtdnn_batches(sizes, batch_size, shuffle):
                if step >= total:
                    break
                shared.train()
                batch = batch_of_rows(tasks[name].train, rows, pad)
                batch = {k: v.to(device) for k, v in batch.items()}
                _, loss = shared(name, **batch, compat=compat)
                for p in params:
                    p.grad = None
                loss.backward()
                if clip:
                    nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
                factor = schedule(step)
                if compat == "mtdnn":
                    for g in dense.param_groups:
                        g["lr"] = lr * factor
                    dense.step()
                else:
                    masked.step(slices[name], lr * factor)
                step += 1
                losses[name].append(loss.detach())
                bar.update(1)
            metrics = {n: evaluate_task(shared, n, t, eval_batch_size or 2 * batch_size, device, compat) for n, t in tasks.items()}
            score = sum(metrics[n][primary_metric(t)] for n, t in tasks.items()) / len(tasks)
            history.append({"epoch": epoch + 1, "step": step, "mean_score": score, "seconds": time.perf_counter() - start,
                            "train_loss": {n: float(torch.stack(v).mean()) for n, v in losses.items() if v},
                            "dev": metrics})
            bar.set_postfix(mean_score=f"{score:.4f}")
            if best is None or score > best:
                best, since_best = score, 0
                best_state = {k: v.detach().clone() for k, v in shared.state_dict().items()}
                best_metrics = metrics
            else:
                since_best += 1
            if step >= total or (patience is not None and since_best >= patience):
                break
    bar.close()
    shared.load_state_dict(best_state)
    shared.eval()
    config = {"tasks": list(tasks), "metrics": {n: primary_metric(t) for n, t in tasks.items()}, "epochs": epochs,
              "lr": lr, "batch_size": batch_size, "warmup": warmup, "clip": clip, "weight_decay": weight_decay,
              "seed": seed, "patience": patience, "compat": compat, "steps": step, "total_steps": total,
              "train_examples": sizes, "dev_examples": {n: len(t.dev) for n, t in tasks.items()},
              "union": {"heads": int(shared.encoder.kept_heads_mask().sum()), "ffn": int(shared.encoder.kept_ffn_mask().sum())},
              "model_name": model.name_or_path, "seconds": round(time.perf_counter() - start, 2)}
    result = ShareResult(best_metrics, shared, history, config)
    if out_dir is not None:
        result.save(out_dir)
    return result


@torch.no_grad()
def evaluate_task(shared: SharedModel, name: str, task, batch_size: int = 64, device=None, compat=None) -> dict:
    """Dev metrics of task `name` under its own ticket, like ft.evaluate."""
    was = shared.training
    shared.eval()
    device = device or shared.encoder.embeddings.word.weight.device
    logits, labels = [], []
    try:
        for batch in iterate_batches(task.dev, batch_size, shared.encoder.config.pad_token_id):
            labels.append(batch.pop("labels"))
            out, _ = shared(name, **{k: v.to(device) for k, v in batch.items()}, compat=compat)
            logits.append(out.float().cpu())
    finally:
        shared.train(was)
    logits, labels = torch.cat(logits), torch.cat(labels)
    metrics = compute_metrics(logits, labels, task)
    metrics["loss"] = float(task_loss(logits, labels))
    return metrics
