"""ft.rewind: a physically compact copy of a model that holds only a ticket's heads and FFNs.

docs/method.md §4 (rewinding and skipping what is pruned): the surviving weights keep their values
(pass the *pre-trained* model to rewind to pre-trained values), pruned heads lose their Q/K/V output rows
(and biases) and their W_O input columns, pruned FFNs lose both Linear layers, and nothing is
re-initialized (the task head is copied too; re-initialize it with `model.reset_head(seed)`). The result
computes exactly what `model(..., head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask())` computes, with
no FLOPs and no parameters for what the ticket prunes. A ticket with neurons (neuron-level pruning) gives
compact FFNs: config.kept_neurons records the original indices of each FFN's kept neurons, whose up/gate
rows (and biases) and down columns are kept; it computes the masked model with neuron_mask=ticket.neuron_mask().
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..models import TicketModel
from ..models.blocks import HEAD_COLUMN_LINEARS, HEAD_ROW_LINEARS, NEURON_COLUMN_LINEARS, NEURON_ROW_LINEARS
from .ticket import Ticket


def ticket_of(model: TicketModel) -> Ticket:
    """The ticket `model` embodies: what a compact model keeps (all True for a full model); with neurons when
    the model holds only some neurons of an FFN."""
    neurons = model.kept_neurons_mask() if model.config.kept_neurons is not None else None
    return Ticket(model.kept_heads_mask(), model.kept_ffn_mask(), {"source": "model"}, neurons)


def rewind(model: TicketModel, ticket: Ticket) -> TicketModel:
    """A compact TicketModel holding a copy of `model`'s weights for the heads and FFNs `ticket` keeps.

    ticket: a Ticket over the original layout [L, H] / [L]. `model` may itself be compact (a rewound model):
    the result keeps what both keep, i.e. it equals `model` run with the ticket's masks. Device, dtype,
    backend, train/eval mode, requires_grad flags and name_or_path carry over; the original is not touched.
    """
    if not isinstance(model, TicketModel):
        raise ValueError(f"rewind needs a fastticket TicketModel; got {type(model).__name__}")
    if not isinstance(ticket, Ticket):
        raise ValueError(f"rewind needs a fastticket Ticket; got {type(ticket).__name__}")
    cfg = model.config
    if tuple(ticket.heads.shape) != (cfg.num_layers, cfg.num_heads):
        raise ValueError(f"ticket has heads {tuple(ticket.heads.shape)}; the model has "
                         f"[L, H]=({cfg.num_layers}, {cfg.num_heads}) (L layers, H heads per layer)")
    kept_heads, kept_ffn, positions = [], [], []
    for l in range(cfg.num_layers):
        held = cfg.layer_heads(l)  # original indices the model holds, in its own column order
        pos = [p for p, h in enumerate(held) if bool(ticket.heads[l, h])]
        positions.append(pos)
        kept_heads.append([held[p] for p in pos])
        kept_ffn.append(cfg.layer_has_ffn(l) and bool(ticket.ffn[l]))
    kept_neurons, neuron_positions = _kept_neurons(cfg, ticket, kept_ffn)
    new_cfg = replace(cfg, kept_heads=kept_heads, kept_ffn=kept_ffn, kept_neurons=kept_neurons,
                      hf_config=dict(cfg.hf_config))

    source = model.state_dict()
    state = dict(source)
    with torch.no_grad():
        for l in range(cfg.num_layers):  # slices are new tensors; whatever is left untouched is cloned below
            _compact_layer(state, f"layers.{l}.", positions[l], len(cfg.layer_heads(l)), cfg.head_dim, kept_ffn[l])
            if kept_ffn[l] and neuron_positions[l] is not None:
                _compact_ffn(state, f"layers.{l}.ffn.", neuron_positions[l])
        state = {k: (v.detach().clone() if v is source[k] else v.detach()) for k, v in state.items()}
    with torch.device("meta"):  # no random init of weights that are overwritten next
        out = TicketModel(new_cfg, backend=model.backend)
    out.load_state_dict(state, strict=True, assign=True)
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, param in out.named_parameters():
        param.requires_grad_(requires_grad.get(name, True))
    out.name_or_path = model.name_or_path
    return out.train(model.training)


def _kept_neurons(cfg, ticket: Ticket, kept_ffn: list[bool]):
    """(config.kept_neurons of the result or None, per layer the positions among the held neurons to keep or
    None when the layer keeps all it holds)."""
    if ticket.neurons is not None and ticket.neurons.shape[1] != cfg.intermediate_size:
        raise ValueError(f"ticket has neurons {tuple(ticket.neurons.shape)}; the model has [L, I]=({cfg.num_layers}, "
                         f"{cfg.intermediate_size}) (I intermediate neurons per FFN)")
    kept, positions = [], []
    for l in range(cfg.num_layers):
        held = cfg.layer_neurons(l)
        pos = None
        if kept_ffn[l] and ticket.neurons is not None:
            pos = [p for p, i in enumerate(held) if bool(ticket.neurons[l, i])]
            if not pos:
                raise ValueError(f"ticket keeps layer {l}'s FFN but none of the neurons the model holds there; "
                                 f"allowed: at least one of them, or ffn[{l}] = False")
        kept.append([held[p] for p in pos] if pos is not None else (held if kept_ffn[l] else []))
        positions.append(None if pos is None or len(pos) == len(held) else pos)
    if all(len(row) == cfg.intermediate_size for l, row in enumerate(kept) if kept_ffn[l]):
        return None, positions
    return kept, positions


def _slice_linears(state: dict, prefix: str, row_linears, column_linears, index: torch.Tensor) -> None:
    """Keeps `index` of the output rows (weight and bias, where present) of row_linears and of the input
    columns of column_linears, in place."""
    for p in row_linears:
        for name in (f"{prefix}{p}.weight", f"{prefix}{p}.bias"):
            if name in state:
                state[name] = state[name].index_select(0, index)
    for p in column_linears:
        state[f"{prefix}{p}.weight"] = state[f"{prefix}{p}.weight"].index_select(1, index)


def _compact_ffn(state: dict, prefix: str, positions: list[int]) -> None:
    """Slices one FFN's entries of `state` (in place) to the held neurons at `positions`: up/gate rows (and
    biases), down columns."""
    index = torch.tensor(positions, dtype=torch.long, device=state[f"{prefix}up.weight"].device)
    _slice_linears(state, prefix, NEURON_ROW_LINEARS, NEURON_COLUMN_LINEARS, index)


def _compact_layer(state: dict, prefix: str, positions: list[int], held: int, head_dim: int, keep_ffn: bool) -> None:
    """Slices one layer's entries of `state` (in place) down to the heads at `positions` of the `held` ones:
    the per-head rows of Q/K/V (and DeBERTa's pos_q/pos_k), the per-head columns of W_O; a pruned FFN loses
    every weight (its LayerNorm stays)."""
    att = prefix + "attention."
    if not positions:
        for p in HEAD_ROW_LINEARS + HEAD_COLUMN_LINEARS:
            state.pop(f"{att}{p}.weight", None)
            if p in HEAD_ROW_LINEARS:
                state.pop(f"{att}{p}.bias", None)  # the layer adds W_O's bias (if any): it stays
    elif len(positions) != held:
        device = state[f"{att}q.weight"].device
        rows = torch.tensor([p * head_dim + i for p in positions for i in range(head_dim)], dtype=torch.long, device=device)
        _slice_linears(state, att, HEAD_ROW_LINEARS, HEAD_COLUMN_LINEARS, rows)
    if not keep_ffn:
        for name in [n for n in state if n.startswith(f"{prefix}ffn.") and not n.startswith(f"{prefix}ffn.norm.")]:
            state.pop(name)
