"""The exact optimizer step of ticket sharing and MT-DNN's multi-task sampler.

A task-i step is a *masked Adamax step* (MaskedAdamax): gradient, weight decay, exp_avg, exp_inf and the
weight update are computed on θ_i's slices (live_slices) only; every other value and every other
optimizer-state entry keeps its bits. Bias correction uses per-slice step counts (one per head slice, one
per parameter otherwise), so each slice runs exactly the Adamax it would run alone over the batches that
use it; a slice no batch has used yet has step 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models.blocks import HEAD_ROW_LINEARS


@dataclass
class Slice:
    """The live part of a parameter for one task: all of it (dim None) or `index` along `dim`."""

    param: nn.Parameter
    dim: int | None = None
    index: torch.Tensor | None = None


def live_slices(shared, name: str) -> list[Slice]:
    """θ_i: the parameters (and head slices) a task-`name` batch of the SharedModel `shared` may change:
    embeddings, the ticket's heads and FFNs, every LayerNorm and W_O bias, the shared pooler, task i's layer."""
    enc, out = shared.encoder, []
    d = enc.config.head_dim
    for module in (enc.embeddings, enc.positions, enc.final_norm):
        out += [Slice(p) for p in (module.parameters() if module is not None else ())]
    for layer, table, ffn in zip(enc.layers, shared.tables(name), shared.task_ffn(name)):
        out += _attention_slices(layer.attention, table, d)
        if ffn:
            out += [Slice(p) for p in layer.ffn.parameters()]
        elif not layer.ffn.pre_norm:  # a skipped FFN is LayerNorm(x) post-norm, x pre-norm
            out += [Slice(p) for p in layer.ffn.norm.parameters()]
    out += [Slice(p) for p in shared.pooler_parameters()]
    out += [Slice(p) for p in shared.heads[name].parameters()]
    return [s for s in out if s.param.requires_grad]


def _attention_slices(att, table: torch.Tensor, head_dim: int) -> list[Slice]:
    """The table's heads' rows of every per-head linear (Q/K/V, DeBERTa's pos_q/pos_k) and W_O columns; W_O's
    bias and the norm whole."""
    out = []
    if att.num_heads:
        rows = (table[:, None] * head_dim + torch.arange(head_dim, device=table.device)[None, :]).reshape(-1)
        for lin in (getattr(att, n) for n in HEAD_ROW_LINEARS):
            if lin is not None:
                out += [Slice(lin.weight, 0, rows)] + ([Slice(lin.bias, 0, rows)] if lin.bias is not None else [])
        out.append(Slice(att.o.weight, 1, rows))
    if att.o is not None and att.o.bias is not None:
        out.append(Slice(att.o.bias))
    return out + [Slice(p) for p in (att.norm.parameters() if att.norm is not None else ())]


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


def mtdnn_batches(sizes: dict, batch_size: int, generator: torch.Generator) -> list[tuple[str, list[int]]]:
    """MT-DNN's multi-task sampler for one epoch: each task's rows shuffled and cut into batches, then all
    batches shuffled together, so tasks are visited in proportion to their number of batches."""
    batches = []
    for name, n in sizes.items():
        order = torch.randperm(n, generator=generator).tolist()
        batches += [(name, order[i:i + batch_size]) for i in range(0, n, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
