"""The shared model of ticket sharing: one encoder holding the union of the tasks' tickets, MT-DNN's layout.

As in MT-DNN, the pooler (BERT: [CLS] → dense → tanh) is part of the shared encoder and every task updates
it; a task's own layer is dropout + linear (TaskLayer). The encoder is physically the *union* of the
tickets (ft.rewind with the union ticket): a structure in no task's ticket is pruned outright. A batch of
task i runs only the subnetwork M(θ, ω_i): its Q/K/V/W_O projections go through head tables
(fastticket.ops.head_projection: only task i's heads' weight slices are read, and weight gradients are
written only there) and the FFNs ω_i prunes are skipped (the layer output is LayerNorm(x), as docs/method.md
§1 defines a pruned FFN). compat="mtdnn" computes the whole union with the ticket as 0/1 masks instead.

The pooler lives in the encoder's own head (`encoder.head.pool`), so the exported encoder carries it; that
head's `out` layer is unused and frozen (each task has its own).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace

import torch
from torch import nn

from ..models import TicketModel
from ..models.encoder import right_padding_lengths, task_loss
from ..utils import atomic_write_text
from .rewind import rewind
from .ticket import Ticket

COMPAT = (None, "mtdnn")
HEADS_FILE = "task_heads.safetensors"
ENCODER_DIR = "shared_encoder"
SHARED_FORMAT, SHARED_VERSION = "fastticket.shared", 2  # version 2: the pooler is shared (in the encoder)


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
        if ticket.neurons is not None and not ticket.kept_neurons()[ticket.ffn].all():
            raise ValueError(f"ticket of task {name!r} prunes FFN neurons; ticket sharing takes head and whole-FFN "
                             f"tickets (granularity='ffn')")
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



class TaskLayer(nn.Module):
    """MT-DNN's task-specific layer: dropout, then a linear map of the shared pooler's output."""

    def __init__(self, width: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, num_labels)

    def forward(self, pooled):
        return self.out(self.dropout(pooled))


class SharedModel(nn.Module):
    """The shared encoder (a compact TicketModel holding the union of the tickets, its pooler included) +
    one TaskLayer per task.

    tickets: name -> Ticket in the original [L, H] / [L] layout. tables(name): per layer the positions of
    the task's heads among the heads the encoder holds (the head table).
    """

    def __init__(self, encoder: TicketModel, heads: dict, tickets: dict, projection_backend: str = "auto"):
        super().__init__()
        encoder.head.out.requires_grad_(False)  # unused: every task has its own layer
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.tickets = dict(tickets)
        self.projection_backend = projection_backend
        self._tables: dict = {}

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def pooler_parameters(self) -> list[nn.Parameter]:
        """The shared pooler's parameters (the encoder head's, but for its unused `out`)."""
        return [p for n, p in self.encoder.head.named_parameters() if not n.startswith("out.")]

    def pool(self, hidden, lengths):
        return self.encoder.head.pool(hidden, lengths)

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
        enc = self.encoder
        lengths = right_padding_lengths(attention_mask, *input_ids.shape)
        if compat == "mtdnn":
            ticket, like = self.tickets[task], enc.embeddings.word.weight
            h = enc.encode(input_ids, lengths, token_type_ids, ticket.head_mask(like.dtype, like.device),
                           ticket.ffn_mask(like.dtype, like.device), backend=backend)
        else:
            h = enc.encode(input_ids, lengths, token_type_ids, backend=backend, head_tables=self.tables(task, input_ids.device),
                           ffn_present=self.task_ffn(task), projection_backend=self.projection_backend)
        logits = self.heads[task](self.pool(h, lengths))
        return logits, (task_loss(logits, labels) if labels is not None else None)

    def task_model(self, name: str, ticket: bool = True) -> TicketModel:
        """A standalone TicketModel for task `name` (copied): physically its ticket (ticket=True) or the whole
        shared union, with the shared pooler and the task's layer as its head. Fine-tune it with ft.fine_tune
        (Table 3, "+ ST fine-tuning")."""
        if name not in self.heads:
            raise ValueError(f"task {name!r} is not one of the shared model's tasks {self.task_names}")
        layer = self.heads[name]
        net = copy.deepcopy(self.encoder)
        net.config = replace(net.config, num_labels=layer.out.out_features, hf_config=dict(net.config.hf_config))
        net.head.out = copy.deepcopy(layer.out).requires_grad_(True)
        net.head.dropout.p = layer.dropout.p
        return rewind(net, self.tickets[name]) if ticket else net

    def save(self, directory: str) -> None:
        from safetensors.torch import save_file

        from ..models import export

        os.makedirs(directory, exist_ok=True)
        export(self.encoder, os.path.join(directory, ENCODER_DIR), format="compact")
        tensors = {f"{n}.{k}": v.detach().cpu().contiguous() for n, head in self.heads.items() for k, v in head.state_dict().items()}
        save_file(tensors, os.path.join(directory, HEADS_FILE), {"format": "pt"})
        for n, t in self.tickets.items():
            t.save(os.path.join(directory, "tickets", f"{n}.json"))
        meta = {"format": SHARED_FORMAT, "version": SHARED_VERSION, "tasks": {
            n: {"num_labels": head.out.out_features, "dropout": head.dropout.p} for n, head in self.heads.items()}}
        atomic_write_text(os.path.join(directory, "shared_model.json"), json.dumps(meta, indent=1, sort_keys=True))

    @classmethod
    def load(cls, directory: str, backend: str = "auto") -> "SharedModel":
        from safetensors.torch import load_file

        from ..models import load_pruned

        try:
            with open(os.path.join(directory, "shared_model.json"), encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("format") != SHARED_FORMAT or meta.get("version") != SHARED_VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}; allowed: "
                                 f"{SHARED_FORMAT!r} version {SHARED_VERSION}")
            encoder = load_pruned(os.path.join(directory, ENCODER_DIR), backend=backend)
            tensors = load_file(os.path.join(directory, HEADS_FILE))
            heads, tickets = {}, {}
            for n, info in meta["tasks"].items():
                head = TaskLayer(encoder.head.out.in_features, int(info["num_labels"]), float(info["dropout"]))
                head.load_state_dict({k[len(n) + 1:]: v for k, v in tensors.items() if k.startswith(n + ".")})
                heads[n] = head
                tickets[n] = Ticket.load(os.path.join(directory, "tickets", f"{n}.json"))
        except (OSError, KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{directory!r} is not a saved shared model ({exc})") from None
        return cls(encoder, heads, tickets).eval()


def build_shared(model: TicketModel, tasks: dict, tickets: dict, seed: int = 0, projection_backend: str = "auto") -> SharedModel:
    """The shared model at `model`'s (pre-trained) values: the union encoder with the model's pooler
    (re-initialized from `seed` where the family's pooler is not pre-trained, as ft.search does) and a task
    layer per task (drawn from seed + 1000·i, task i's dropout)."""
    check_share_inputs(model, tasks, tickets)
    encoder = rewind(model, union_ticket(tickets))
    encoder.reset_head(seed, keep_pooler=True)
    width, like = encoder.head.out.in_features, encoder.embeddings.word.weight
    heads = {}
    for i, (name, task) in enumerate(tasks.items()):
        layer = TaskLayer(width, task.num_labels, float(getattr(task, "dropout", encoder.head.dropout.p)))
        gen = torch.Generator().manual_seed(seed + 1000 * i)
        with torch.no_grad():
            layer.out.weight.copy_(torch.empty(layer.out.weight.shape).normal_(0.0, model.config.initializer_range, generator=gen))
            layer.out.bias.zero_()
        heads[name] = layer.to(device=like.device, dtype=like.dtype)
    return SharedModel(encoder, heads, tickets, projection_backend)
