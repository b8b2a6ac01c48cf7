"""The encoder block: masked self-attention and feed-forward sublayers, post-norm or pre-norm.

Masks follow docs/method.md §1 in every variant: ξ[l, h] scales head h's context before W_O
(masked_attention's head_scale), ν[l] scales the FFN output (after its dropout) before the residual add.
Post-norm (BERT, DeBERTa): y = LayerNorm(x + sublayer(x)), the FFN through the fused
masked_residual_layernorm. Pre-norm (ModernBERT): y = x + sublayer(norm(x)), ν through apply_scale.
Neuron masks m[l, i] multiply the FFN's inner activation (neuron-level pruning; plain torch).
Options: linears with or without bias, a GLU feed-forward (ν scales its whole output), rotary positions,
DeBERTa's disentangled c2p / p2c score bias, a local attention window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import head_projection, masked_attention, masked_residual_layernorm
from ..ops.mask_scale import apply_scale
from .config import EncoderConfig
from .positions import LayerNorm, PositionContext, apply_rotary

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}
# Linears whose output rows are per head (sliced by rewind, zero-filled by export) and those whose input
# columns are: the one place that says how a head is laid out in the weights.
HEAD_ROW_LINEARS = ("q", "k", "v", "pos_q", "pos_k")
HEAD_COLUMN_LINEARS = ("o",)
# The same for FFN neurons: one output row of up/gate and one input column of down per intermediate neuron.
NEURON_ROW_LINEARS = ("up", "gate")
NEURON_COLUMN_LINEARS = ("down",)


def activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; allowed: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]



def select_kept(module, scale):
    """scale's last-dim entries at module.kept (a compact module's heads or neurons), the index cached on the
    module per device; scale itself when the module keeps every entry."""
    if scale is None or module.kept is None:
        return scale
    if module._kept_index is None or module._kept_index.device != scale.device:
        module._kept_index = torch.tensor(module.kept, dtype=torch.long, device=scale.device)
    return scale.index_select(-1, module._kept_index)

class OutputBias(nn.Module):
    """W_O of a layer that keeps no head: only its bias is left (state-dict name `attention.o.bias`)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden))


class Attention(nn.Module):
    """Multi-head self-attention over the heads this layer holds (all num_heads, or the original indices `kept`).

    A compact layer (ft.rewind) has Q/K/V (and DeBERTa's pos_q/pos_k) rows and W_O columns for its kept heads
    only; with no head left it has no such weight and adds only W_O's bias (if any). Head masks and probes
    always come in the original layout ([H] or [B, H]); the kept heads' entries are used.
    """

    def __init__(self, config: EncoderConfig, index: int = 0, kept: list[int] | None = None):
        super().__init__()
        c = config
        kept = list(range(c.num_heads)) if kept is None else list(kept)
        self.num_heads, self.head_dim, self.dropout_p = len(kept), c.head_dim, c.attention_dropout
        self.kept = None if len(kept) == c.num_heads else kept  # None: mask columns are used as they are
        self._kept_index: torch.Tensor | None = None
        self.pre_norm, self.softmax_scale = c.pre_norm, c.softmax_scale
        self.window, self.rope_theta = c.layer_window(index), c.layer_rope_theta(index)
        self.c2p = c.relative_attention and "c2p" in c.pos_att_type
        self.p2c = c.relative_attention and "p2c" in c.pos_att_type
        hidden, inner, bias = c.hidden_size, self.num_heads * c.head_dim, c.attention_bias
        self.q = self.k = self.v = self.pos_q = self.pos_k = None
        if self.num_heads:
            self.q, self.k, self.v = (nn.Linear(hidden, inner, bias=bias) for _ in range(3))
            if not c.share_att_key:  # DeBERTa: own projections of the relative embeddings
                self.pos_k = nn.Linear(hidden, inner) if self.c2p else None
                self.pos_q = nn.Linear(hidden, inner) if self.p2c else None
            self.o = nn.Linear(inner, hidden, bias=bias)
        else:
            self.o = OutputBias(hidden) if bias else None
        self.pos_dropout = nn.Dropout(c.hidden_dropout) if (self.c2p or self.p2c) else None
        self.dropout = nn.Dropout(c.output_dropout)
        # post-norm: LayerNorm after the residual; pre-norm: before attention (none on ModernBERT's layer 0)
        has_norm = not c.pre_norm or index > 0 or c.first_attention_norm
        self.norm = LayerNorm(hidden, c.layer_norm_eps, c.norm_bias) if has_norm else None

    def _split(self, x, heads=None):
        b, t, _ = x.shape
        return x.view(b, t, heads or self.num_heads, self.head_dim).transpose(1, 2)

    def _select(self, scale):
        """The kept heads' columns of an [H] / [B, H] mask or probe in the original layout."""
        return select_kept(self, scale)

    def forward(self, x, lengths, head_scale, abs_probe, backend, table=None, projection_backend="auto",
                positions: PositionContext | None = None):
        """x [B, T, C] -> [B, T, C]. table: optional int [h] positions of the heads to run among those held
        (a task's head table in ticket sharing): only their weight slices are read and receive gradients.
        positions: the PositionContext of TicketModel.encode (needed for rotary or relative positions)."""
        heads = self.num_heads if table is None else table.numel()
        if not heads:  # every head pruned: the context is zero, W_O's bias is what is left
            return self._residual(None if self.o is None else self.o.bias.expand_as(x), x)
        if (self.rope_theta is not None or self.c2p or self.p2c) and positions is None:
            raise ValueError("this layer uses rotary or relative positions: pass positions=TicketModel.position_context(...)"
                             " (TicketModel.encode does)")
        inputs = self.norm(x) if self.pre_norm and self.norm is not None else x
        if table is None:
            project, project_out = (lambda lin, z=inputs: lin(z)), self.o
        else:
            if head_scale is not None or abs_probe is not None:
                raise ValueError("a head table selects heads itself: head_scale/abs_probe must be None with it")

            def project(lin, z=inputs):
                return head_projection(z, lin.weight, lin.bias, table, self.head_dim, "in", backend=projection_backend)

            def project_out(ctx):
                return head_projection(ctx, self.o.weight, self.o.bias, table, self.head_dim, "out", backend=projection_backend)

        q, k, v = (self._split(project(lin), heads) for lin in (self.q, self.k, self.v))  # [B, h, T, D] views
        if self.rope_theta is not None:
            tables = positions.rotary[self.rope_theta]
            q, k = apply_rotary(q, tables), apply_rotary(k, tables)
        bias = self._relative_bias(q, k, project, positions) if (self.c2p or self.p2c) else None
        extras = {name: value for name, value in (("attn_bias", bias), ("window", self.window)) if value is not None}
        ctx = masked_attention(
            q, k, v, self._select(head_scale), lengths, self.dropout_p if self.training else 0.0,
            softmax_scale=self.softmax_scale, backend=backend, abs_probe=self._select(abs_probe), **extras,
        )
        ctx = ctx.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self._residual(project_out(ctx), x)

    def _residual(self, out, x):
        if out is None:  # no head and no W_O bias: the sublayer adds nothing
            return x if self.pre_norm else self.norm(x)
        out = self.dropout(out)
        return x + out if self.pre_norm else self.norm(out + x)

    def _relative_bias(self, q, k, project, positions: PositionContext) -> torch.Tensor:
        """DeBERTa's c2p + p2c terms [B, h, T, T], scaled like the content scores (HF's sqrt(d·factor))."""
        rel = positions.relative_embeddings[None]  # [1, 2S, C]
        rel = self.pos_dropout(rel)
        index = positions.relative_index  # [T, T] table rows of (query i, key j)
        batch, heads, seq, _ = q.shape
        bias = 0
        if self.c2p:  # query i's content against key j's relative position: q_i · Kr[δ(i, j)]
            pos_k = self._split(project(self.k if self.pos_k is None else self.pos_k, rel), heads)[0]  # [h, 2S, D]
            bias = torch.matmul(q, pos_k.transpose(-1, -2)).gather(-1, index.expand(batch, heads, seq, seq))
        if self.p2c:  # key j's content against query i's relative position: k_j · Qr[δ(i, j)]
            pos_q = self._split(project(self.q if self.pos_q is None else self.pos_q, rel), heads)[0]
            by_key = torch.matmul(k, pos_q.transpose(-1, -2))  # [B, h, T(key), 2S]
            bias = bias + by_key.gather(-1, index.t().expand(batch, heads, seq, seq)).transpose(-1, -2)
        return bias * self.softmax_scale


class _NeuronScaleWithProbe(torch.autograd.Function):
    """h·m over the last axis whose backward also gives `probe` Σ_t |∂L/∂y_t,i · h_t,i| (the `official` estimator)."""

    @staticmethod
    def forward(ctx, h, scale, probe):
        ctx.save_for_backward(h, scale)
        return h * _neuron_view(scale, h)

    @staticmethod
    def backward(ctx, grad):
        h, scale = ctx.saved_tensors
        r = grad.float() * h.float()  # [B, T, I]: per token and neuron, in fp32
        grad_scale = r.sum(1) if scale.dim() == 2 else r.sum((0, 1))
        return grad * _neuron_view(scale, h), grad_scale.to(scale.dtype), r.abs().sum(1)


def _neuron_view(scale: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """An [I] / [B, I] neuron mask as a view that broadcasts over h [B, T, I], in h's dtype."""
    return (scale[:, None, :] if scale.dim() == 2 else scale).to(h.dtype)


def scale_neurons(h: torch.Tensor, scale: torch.Tensor | None, probe: torch.Tensor | None = None) -> torch.Tensor:
    """h [B, T, I] times a neuron mask [I] or [B, I]; probe [B, I] (values unused) receives Σ_t|r_t,i| as its
    gradient. Plain torch: the mask gradient Σ_t ∂L/∂y_t,i · h_t,i comes from autograd."""
    if probe is None:
        return h if scale is None else h * _neuron_view(scale, h)
    if scale is None:
        scale = h.new_ones(h.shape[-1])
    return _NeuronScaleWithProbe.apply(h, scale, probe)


class FeedForward(nn.Module):
    """down(inner(x)), masked by ν, with the residual: post-norm LayerNorm(x + ν·FFN(x)), pre-norm
    x + ν·FFN(norm(x)). inner(x) is the FFN's inner activation [B, T, I]: act(up x), or act(up x)·(gate x)
    for a GLU; a neuron mask [I] / [B, I] multiplies it. A pruned FFN (present=False, ft.rewind) has no
    weights and computes skip(x). A compact FFN holds the neurons `kept` (original indices) only; neuron
    masks and probes come in the original layout and the kept neurons' entries are used."""

    def __init__(self, config: EncoderConfig, present: bool = True, width: int | None = None,
                 kept: list[int] | None = None):
        super().__init__()
        c = config
        self.present, self.pre_norm = present, c.pre_norm
        hidden, bias = c.hidden_size, c.mlp_bias
        inter = c.intermediate_size if width is None else width  # fewer after neuron-level pruning
        if kept is not None and len(kept) != inter:
            raise ValueError(f"FeedForward width {inter} does not match its {len(kept)} kept neurons")
        self.kept = None if kept is None or len(kept) == c.intermediate_size else list(kept)
        self._kept_index: torch.Tensor | None = None
        self.up = nn.Linear(hidden, inter, bias=bias) if present else None
        self.gate = nn.Linear(hidden, inter, bias=bias) if present and c.glu else None
        self.down = nn.Linear(inter, hidden, bias=bias) if present else None
        self.act = activation(c.hidden_act)
        self.inner_dropout = nn.Dropout(c.ffn_inner_dropout)
        self.dropout = nn.Dropout(c.ffn_dropout)
        self.norm = LayerNorm(hidden, c.layer_norm_eps, c.norm_bias)

    def inner(self, x: torch.Tensor) -> torch.Tensor:
        """The FFN's inner activation [B, T, I] (I = the neurons held), where a neuron mask applies."""
        h = self.act(self.up(x))
        if self.gate is not None:
            h = h * self.gate(x)
        return self.inner_dropout(h)

    def _select(self, scale):
        """The held neurons' entries of an [I] / [B, I] neuron mask or probe in the original layout."""
        return select_kept(self, scale)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The output when the FFN is pruned (ν = 0): LayerNorm(x) post-norm, x pre-norm."""
        return x if self.pre_norm else self.norm(x)

    def forward(self, x, ffn_scale, abs_probe, backend, neuron_scale=None, neuron_probe=None):
        if not self.present:
            return self.skip(x)
        z = self.norm(x) if self.pre_norm else x
        h = scale_neurons(self.inner(z), self._select(neuron_scale), self._select(neuron_probe))  # [B, T, I]
        out = self.dropout(self.down(h))
        if self.pre_norm:
            return x + apply_scale(out, ffn_scale, abs_probe)
        return masked_residual_layernorm(
            out, x, ffn_scale, self.norm.weight, self.norm.bias, self.norm.eps, backend=backend, abs_probe=abs_probe
        )


class EncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig, index: int = 0):
        super().__init__()
        self.attention = Attention(config, index, kept=config.layer_heads(index))
        present = config.layer_has_ffn(index)
        self.ffn = FeedForward(config, present=present, width=config.layer_ffn_width(index),
                               kept=config.layer_neurons(index) if present else None)

    def forward(self, x, lengths, head_scale, ffn_scale, head_probe, ffn_probe, backend, positions=None,
                neuron_scale=None, neuron_probe=None):
        x = self.attention(x, lengths, head_scale, head_probe, backend, positions=positions)
        return self.ffn(x, ffn_scale, ffn_probe, backend, neuron_scale, neuron_probe)
