"""The lean masked encoder: BERT / RoBERTa / ELECTRA / DistilBERT with head and FFN masks.

Masks follow ARCHITECTURE §1: ξ[l, h] scales head h's context before W_O (masked_attention), ν[l] scales
the FFN output before the residual add and LayerNorm (masked_residual_layernorm). Both may be per model
([L, H], [L]) or per example ([B, L, H], [B, L]). No Hugging Face modeling code runs here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import BACKENDS, head_projection, masked_attention, masked_residual_layernorm
from .config import EncoderConfig

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


def activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; allowed: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


@dataclass
class EncoderOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class LayerNorm(nn.Module):
    """Weight and bias only, so the fused op can take them; F.layer_norm where nothing is masked."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.family = config.family
        self.pad_token_id = config.pad_token_id
        self.word = nn.Embedding(config.vocab_size, width)
        self.position = nn.Embedding(config.max_position_embeddings, width)
        self.token_type = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size > 0 else None
        self.norm = LayerNorm(width, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.project = nn.Linear(width, config.hidden_size) if width != config.hidden_size else None

    def positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.family == "roberta":  # RoBERTa counts positions from padding_idx + 1 over non-pad tokens
            real = input_ids.ne(self.pad_token_id).long()
            return torch.cumsum(real, dim=1) * real + self.pad_token_id
        return torch.arange(input_ids.shape[1], device=input_ids.device)[None, :].expand_as(input_ids)

    def forward(self, input_ids, token_type_ids=None):
        h = self.word(input_ids) + self.position(self.positions(input_ids))
        if self.token_type is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            h = h + self.token_type(token_type_ids)
        h = self.dropout(self.norm(h))
        return self.project(h) if self.project is not None else h


class OutputBias(nn.Module):
    """W_O of a layer that keeps no head: only its bias is left (state-dict name `attention.o.bias`)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden))


class Attention(nn.Module):
    """Multi-head self-attention over the heads this layer holds (all num_heads, or the original indices `kept`).

    A compact layer (ft.rewind) has Q/K/V rows and W_O columns for its kept heads only; with no head left it
    has no Q/K/V/W_O weight at all and computes LayerNorm(b_O + x). Head masks and probes always come in the
    original layout ([H] or [B, H]); the kept heads' entries are used, the others multiply nothing.
    """

    def __init__(self, hidden: int, num_heads: int, head_dim: int, attention_dropout: float, output_dropout: float,
                 eps: float, kept: list[int] | None = None):
        super().__init__()
        kept = list(range(num_heads)) if kept is None else list(kept)
        self.num_heads, self.head_dim, self.dropout_p = len(kept), head_dim, attention_dropout
        self.kept = None if len(kept) == num_heads else kept  # None: mask columns are used as they are
        self._kept_index: torch.Tensor | None = None
        inner = self.num_heads * head_dim
        if self.num_heads:
            self.q = nn.Linear(hidden, inner)
            self.k = nn.Linear(hidden, inner)
            self.v = nn.Linear(hidden, inner)
            self.o = nn.Linear(inner, hidden)
        else:
            self.q = self.k = self.v = None
            self.o = OutputBias(hidden)
        self.dropout = nn.Dropout(output_dropout)
        self.norm = LayerNorm(hidden, eps)

    def _split(self, x, heads=None):
        b, t, _ = x.shape
        return x.view(b, t, heads or self.num_heads, self.head_dim).transpose(1, 2)

    def _select(self, scale):
        """The kept heads' columns of an [H] / [B, H] mask or probe in the original layout."""
        if scale is None or self.kept is None:
            return scale
        if self._kept_index is None or self._kept_index.device != scale.device:
            self._kept_index = torch.tensor(self.kept, dtype=torch.long, device=scale.device)
        return scale.index_select(-1, self._kept_index)

    def forward(self, x, lengths, head_scale, abs_probe, backend, table=None, projection_backend="auto"):
        """table: optional int [h] positions of the heads to run among those held (a task's head table in
        ticket sharing): only their weight slices are read and receive gradients (head_projection)."""
        heads = self.num_heads if table is None else table.numel()
        if not heads:  # every head pruned: the context is zero, W_O's bias is what is left
            return self.norm(self.dropout(self.o.bias.expand_as(x)) + x)
        if table is None:
            project, project_out = (lambda lin: lin(x)), self.o
        else:
            if head_scale is not None or abs_probe is not None:
                raise ValueError("a head table selects heads itself: head_scale/abs_probe must be None with it")

            def project(lin):
                return head_projection(x, lin.weight, lin.bias, table, self.head_dim, "in", backend=projection_backend)

            def project_out(ctx):
                return head_projection(ctx, self.o.weight, self.o.bias, table, self.head_dim, "out", backend=projection_backend)

        q, k, v = (self._split(project(lin), heads) for lin in (self.q, self.k, self.v))
        ctx = masked_attention(
            q, k, v, self._select(head_scale), lengths, self.dropout_p if self.training else 0.0,
            softmax_scale=1.0 / math.sqrt(self.head_dim), backend=backend, abs_probe=self._select(abs_probe),
        )
        ctx = ctx.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.norm(self.dropout(project_out(ctx)) + x)


class FeedForward(nn.Module):
    """W_2·act(W_1 x + b_1) + b_2, masked by ν, then residual and LayerNorm. A pruned FFN (present=False,
    ft.rewind) has no up/down weights at all and computes LayerNorm(x); its mask entry multiplies nothing."""

    def __init__(self, hidden: int, intermediate: int, act: str, dropout: float, eps: float, present: bool = True):
        super().__init__()
        self.present = present
        self.up = nn.Linear(hidden, intermediate) if present else None
        self.down = nn.Linear(intermediate, hidden) if present else None
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNorm(hidden, eps)

    def forward(self, x, ffn_scale, abs_probe, backend):
        if not self.present:
            return self.norm(x)
        out = self.dropout(self.down(self.act(self.up(x))))
        return masked_residual_layernorm(
            out, x, ffn_scale, self.norm.weight, self.norm.bias, self.norm.eps, backend=backend, abs_probe=abs_probe
        )


class EncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig, index: int = 0):
        super().__init__()
        c = config
        # dropout after W_O: BERT-style models use the hidden rate; DistilBERT has none there
        output_dropout = 0.0 if c.family == "distilbert" else c.hidden_dropout
        self.attention = Attention(c.hidden_size, c.num_heads, c.head_dim, c.attention_dropout, output_dropout,
                                   c.layer_norm_eps, kept=c.layer_heads(index))
        self.ffn = FeedForward(c.hidden_size, c.intermediate_size, c.hidden_act, c.hidden_dropout, c.layer_norm_eps,
                               present=c.layer_has_ffn(index))

    def forward(self, x, lengths, head_scale, ffn_scale, head_probe, ffn_probe, backend):
        x = self.attention(x, lengths, head_scale, head_probe, backend)
        return self.ffn(x, ffn_scale, ffn_probe, backend)


class ClassificationHead(nn.Module):
    """One head for all families: [dropout] → dense → act → dropout → out on the first token.

    BERT: pooler(tanh) then dropout; RoBERTa: dropout, dense, tanh; ELECTRA: the same with gelu;
    DistilBERT: pre_classifier with ReLU.
    """

    _STYLE = {"bert": (False, "tanh"), "roberta": (True, "tanh"), "electra": (True, "gelu"), "distilbert": (False, "relu")}

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.pre_dropout, act = self._STYLE[config.family]
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(act)
        self.dropout = nn.Dropout(config.task_dropout)
        self.out = nn.Linear(config.hidden_size, config.num_labels)

    def pool(self, hidden, lengths=None):
        """The pooler: the first token, [dropout,] dense, act -> [B, hidden]; the task layer is dropout + out."""
        x = hidden[:, 0]
        if self.pre_dropout:
            x = self.dropout(x)
        return self.act(self.dense(x))

    def forward(self, hidden, lengths=None):
        return self.out(self.dropout(self.pool(hidden, lengths)))


def task_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for classification, MSE for regression (one output), per example with reduction='none'."""
    if tuple(labels.shape) != (logits.shape[0],):
        raise ValueError(f"labels have shape {tuple(labels.shape)}; allowed: [B]=({logits.shape[0]},)")
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype), reduction=reduction)
    return F.cross_entropy(logits, labels.long(), reduction=reduction)


class TicketModel(nn.Module):
    """A masked encoder with a sequence classification / regression head."""

    def __init__(self, config: EncoderConfig, backend: str = "auto"):
        super().__init__()
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is unknown; allowed: 'auto' or one of {BACKENDS}")
        self.config = config
        self.backend = backend
        self.name_or_path: str | None = None  # where the weights (and tokenizer) came from
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config, l) for l in range(config.num_layers))
        self.head = ClassificationHead(config)

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    @property
    def is_compact(self) -> bool:
        """True when some head or FFN is physically absent (a model from ft.rewind or ft.load_pruned)."""
        return self.config.is_compact

    def kept_heads_mask(self) -> torch.Tensor:
        """bool [L, H] in the original layout: True where this model holds the head."""
        kept = torch.zeros(self.num_layers, self.num_heads, dtype=torch.bool)
        for l in range(self.num_layers):
            kept[l, self.config.layer_heads(l)] = True
        return kept

    def kept_ffn_mask(self) -> torch.Tensor:
        """bool [L]: True where this model holds the layer's FFN."""
        return torch.tensor([self.config.layer_has_ffn(l) for l in range(self.num_layers)], dtype=torch.bool)

    def reset_head(self, seed: int, keep_pooler: bool = False) -> None:
        """Re-initializes the task head (normal(0, initializer_range), zero bias) from `seed` alone.

        keep_pooler: BERT's head.dense is the pre-trained pooler, not part of the task layer: keep it.
        """
        gen = torch.Generator().manual_seed(seed)
        layers = (self.head.out,) if keep_pooler and self.config.family == "bert" else (self.head.dense, self.head.out)
        for lin in layers:
            w = torch.empty(lin.weight.shape).normal_(0.0, self.config.initializer_range, generator=gen)
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        ffn_mask: torch.Tensor | None = None,
        *,
        head_probe: torch.Tensor | None = None,
        ffn_probe: torch.Tensor | None = None,
        backend: str | None = None,
    ) -> EncoderOutput:
        """logits [B, num_labels] (and the mean loss when labels are given).

        head_mask: [L, H] or [B, L, H]; ffn_mask: [L] or [B, L]; 1 keeps, 0 prunes, gradients flow to them.
        Masks and probes always use the original layout, also on a compact model (ft.rewind): there the
        entries of heads/FFNs the model does not hold multiply nothing (their gradient is zero), so a compact
        model with mask m computes what the full model computes with m times its ticket's mask.
        head_probe [B, L, H] / ffn_probe [B, L]: optional tensors whose gradients receive Σ_t|r_t| per
        example (the `official` estimator). backend: overrides self.backend for the fused ops.
        """
        backend = backend or self.backend
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T]; got shape {tuple(input_ids.shape)}")
        batch, seq = input_ids.shape
        if seq > self.config.max_length:
            raise ValueError(f"sequence length {seq} exceeds the model's maximum of {self.config.max_length} tokens")
        weight = self.embeddings.word.weight
        head_mask = self._check_mask("head_mask", head_mask, (self.num_layers, self.num_heads), batch, weight)
        ffn_mask = self._check_mask("ffn_mask", ffn_mask, (self.num_layers,), batch, weight)
        self._check_probe("head_probe", head_probe, (batch, self.num_layers, self.num_heads))
        self._check_probe("ffn_probe", ffn_probe, (batch, self.num_layers))
        lengths = right_padding_lengths(attention_mask, batch, seq)

        if token_type_ids is not None and tuple(token_type_ids.shape) != (batch, seq):
            raise ValueError(f"token_type_ids have shape {tuple(token_type_ids.shape)}; allowed: [B, T]={(batch, seq)}")
        h = self.embeddings(input_ids, token_type_ids)
        for l, layer in enumerate(self.layers):
            h = layer(
                h, lengths,
                _layer_slice(head_mask, l, model_dims=2),
                _layer_slice(ffn_mask, l, model_dims=1),
                None if head_probe is None else head_probe[:, l],
                None if ffn_probe is None else ffn_probe[:, l],
                backend,
            )
        logits = self.head(h)
        loss = task_loss(logits, labels) if labels is not None else None
        return EncoderOutput(logits=logits, loss=loss)

    @staticmethod
    def _check_mask(name, mask, shape, batch, like):
        """The mask on the model's device; integer and bool masks in the model's dtype (float ones keep theirs)."""
        if mask is None:
            return None
        mask = torch.as_tensor(mask, device=like.device)
        if tuple(mask.shape) not in (shape, (batch,) + shape):
            per_example = "[B, L, H]" if len(shape) == 2 else "[B, L]"
            per_model = "[L, H]" if len(shape) == 2 else "[L]"
            raise ValueError(
                f"{name} has shape {tuple(mask.shape)}; allowed: {per_model}={shape} or {per_example}={(batch,) + shape}"
            )
        return mask if mask.is_floating_point() else mask.to(like.dtype)

    @staticmethod
    def _check_probe(name, probe, shape):
        if probe is not None and tuple(probe.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(probe.shape)}; allowed: {shape}")


def _layer_slice(mask, layer, model_dims):
    """Layer `layer` of a per-model ([L, ...], `model_dims` dims) or per-example ([B, L, ...]) mask."""
    if mask is None:
        return None
    return mask[layer] if mask.dim() == model_dims else mask[:, layer]


def right_padding_lengths(attention_mask, batch, seq):
    """int [B] lengths from a 0/1 attention mask, or None when nothing is padded; only right padding.

    On an accelerator the mask is trusted (fastticket's batches are right-padded) and always passed as
    lengths: checking it would cost a host sync in every forward.
    """
    if attention_mask is None:
        return None
    if tuple(attention_mask.shape) != (batch, seq):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; allowed: [B, T]={(batch, seq)}")
    keep = attention_mask.bool()
    lengths = keep.sum(1)
    if keep.device.type != "cpu":
        return lengths
    expected = torch.arange(seq, device=keep.device)[None, :] < lengths[:, None]
    right_padded, padded, empty = torch.stack([(expected == keep).all(), (lengths < seq).any(), (lengths == 0).any()]).tolist()
    if not right_padded:
        raise ValueError("attention_mask must be right-padded (ones, then zeros, in each row); left or inner padding is not supported")
    if empty:
        raise ValueError("attention_mask has a row with no tokens; every example needs length >= 1")
    return lengths if padded else None
