"""The lean masked encoder (TicketModel) over every supported family, with head and FFN masks.

Masks follow docs/method.md §1: ξ[l, h] scales head h's context before W_O, ν[l] scales the FFN output before
the residual add (blocks.py). Both may be per model ([L, H], [L]) or per example ([B, L, H], [B, L]). No
Hugging Face modeling code runs here; what differs between families is in EncoderConfig's fields and the
family object (families/), never in a branch on a family's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import check_backend_name
from .blocks import Attention, EncoderLayer, FeedForward, activation
from .config import EncoderConfig
from .heads import ClassificationHead
from .positions import Embeddings, LayerNorm, PositionContext, Positions

__all__ = ["TicketModel", "EncoderOutput", "task_loss", "right_padding_lengths", "ClassificationHead", "Attention",
           "FeedForward", "EncoderLayer", "Embeddings", "LayerNorm", "activation"]


@dataclass
class EncoderOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


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
        check_backend_name(backend)
        self.config = config
        self.backend = backend
        self.name_or_path: str | None = None  # where the weights (and tokenizer) came from
        self.embeddings = Embeddings(config)
        has_positions = config.relative_attention or config.rope_theta is not None
        self.positions = Positions(config) if has_positions else None  # rotary / relative state
        self.layers = nn.ModuleList(EncoderLayer(config, l) for l in range(config.num_layers))
        self.final_norm = LayerNorm(config.hidden_size, config.layer_norm_eps, config.norm_bias) if config.pre_norm else None
        self.head = ClassificationHead(config)

    @property
    def family(self):
        """The family object (fastticket.models.families) of this model."""
        return self.config.family_adapter

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

    def kept_neurons_mask(self) -> torch.Tensor:
        """bool [L, I] in the original layout: True where this model holds the FFN neuron (False in pruned FFNs)."""
        kept = torch.zeros(self.num_layers, self.config.intermediate_size, dtype=torch.bool)
        for l in range(self.num_layers):
            kept[l, self.config.layer_neurons(l)] = True
        return kept

    def reset_head(self, seed: int, keep_pooler: bool = False) -> None:
        """Re-initializes the task head from `seed` alone: linears normal(0, initializer_range) with zero bias,
        a pooler norm to ones/zeros. keep_pooler: keep the pooler when the family says it is pre-trained
        (BERT's pooler, DeBERTa's ContextPooler / ModernBERT's head when the checkpoint had them)."""
        gen = torch.Generator().manual_seed(seed)
        head = self.head
        modules = [head.out] if keep_pooler and self.config.pooler_is_pretrained else head.pooler_modules() + [head.out]
        with torch.no_grad():
            for module in modules:
                if isinstance(module, nn.Linear):
                    module.weight.copy_(torch.empty(module.weight.shape).normal_(0.0, self.config.initializer_range, generator=gen))
                else:
                    module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()

    def position_context(self, seq: int, device=None) -> PositionContext | None:
        """What the layers of a forward over `seq` tokens share (rotary tables, relative embeddings); None for
        absolute-position families. Pass it as `positions=` when running layers one by one."""
        if self.positions is None:
            return None
        return self.positions.context(seq, device if device is not None else self.embeddings.word.weight.device)

    def encode(self, input_ids, lengths=None, token_type_ids=None, head_mask=None, ffn_mask=None, *, head_probe=None,
               ffn_probe=None, backend=None, head_tables=None, ffn_present=None, projection_backend="auto",
               neuron_mask=None, neuron_probe=None):
        """Final hidden states [B, T, C] (after the final norm of a pre-norm model). Inputs checked by forward:
        lengths int [B] or None (right_padding_lengths), masks [L, H]/[B, L, H] and [L]/[B, L] or None.
        head_tables: per layer an int [h] head table (ticket sharing: only those heads run, see Attention);
        ffn_present: per layer whether the FFN runs (False: skipped, as a pruned FFN). neuron_mask [L, I]/[B, L, I]
        and neuron_probe [B, L, I]: see forward."""
        backend = backend or self.backend
        h = self.embeddings(input_ids, token_type_ids)
        positions = self.position_context(input_ids.shape[1], h.device)
        for l, layer in enumerate(self.layers):
            if head_tables is None:
                h = layer.attention(h, lengths, _layer_slice(head_mask, l, 2), _layer_slice(head_probe, l, None),
                                    backend, positions=positions)
            else:
                h = layer.attention(h, lengths, None, None, backend, table=head_tables[l],
                                    projection_backend=projection_backend, positions=positions)
            if ffn_present is not None and not ffn_present[l]:
                h = layer.ffn.skip(h)
            else:
                h = layer.ffn(h, _layer_slice(ffn_mask, l, 1), _layer_slice(ffn_probe, l, None), backend,
                              _layer_slice(neuron_mask, l, 2), _layer_slice(neuron_probe, l, None))
        return self.final_norm(h) if self.final_norm is not None else h

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
        neuron_mask: torch.Tensor | None = None,
        neuron_probe: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """logits [B, num_labels] (and the mean loss when labels are given).

        head_mask: [L, H] or [B, L, H]; ffn_mask: [L] or [B, L]; 1 keeps, 0 prunes, gradients flow to them.
        Masks and probes always use the original layout, also on a compact model (ft.rewind): there the
        entries of heads/FFNs the model does not hold multiply nothing (their gradient is zero), so a compact
        model with mask m computes what the full model computes with m times its ticket's mask.
        head_probe [B, L, H] / ffn_probe [B, L]: optional tensors whose gradients receive Σ_t|r_t| per
        example (the `official` estimator). backend: overrides self.backend for the fused ops.
        neuron_mask: [L, I] or [B, L, I] (I = intermediate_size) multiplies each FFN's inner activation
        (neuron-level pruning); neuron_probe [B, L, I] receives Σ_t|r_t| per neuron like the other probes.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T]; got shape {tuple(input_ids.shape)}")
        batch, seq = input_ids.shape
        if seq > self.config.max_length:
            raise ValueError(f"sequence length {seq} exceeds the model's maximum of {self.config.max_length} tokens")
        weight = self.embeddings.word.weight
        head_mask = self._check_mask("head_mask", head_mask, (self.num_layers, self.num_heads), batch, weight)
        ffn_mask = self._check_mask("ffn_mask", ffn_mask, (self.num_layers,), batch, weight)
        neurons = (self.num_layers, self.config.intermediate_size)
        neuron_mask = self._check_mask("neuron_mask", neuron_mask, neurons, batch, weight, dims="L, I")
        self._check_probe("head_probe", head_probe, (batch, self.num_layers, self.num_heads))
        self._check_probe("ffn_probe", ffn_probe, (batch, self.num_layers))
        self._check_probe("neuron_probe", neuron_probe, (batch,) + neurons)
        lengths = right_padding_lengths(attention_mask, batch, seq)
        if token_type_ids is not None and tuple(token_type_ids.shape) != (batch, seq):
            raise ValueError(f"token_type_ids have shape {tuple(token_type_ids.shape)}; allowed: [B, T]={(batch, seq)}")
        h = self.encode(input_ids, lengths, token_type_ids, head_mask, ffn_mask, head_probe=head_probe,
                        ffn_probe=ffn_probe, backend=backend, neuron_mask=neuron_mask, neuron_probe=neuron_probe)
        logits = self.head(h, lengths)
        loss = task_loss(logits, labels) if labels is not None else None
        return EncoderOutput(logits=logits, loss=loss)

    @staticmethod
    def _check_mask(name, mask, shape, batch, like, dims=None):
        """The mask on the model's device; integer and bool masks in the model's dtype (float ones keep theirs).
        dims: the names of the per-model axes (default "L, H" or "L")."""
        if mask is None:
            return None
        mask = torch.as_tensor(mask, device=like.device)
        if tuple(mask.shape) not in (shape, (batch,) + shape):
            dims = dims or ("L, H" if len(shape) == 2 else "L")
            per_example, per_model = f"[B, {dims}]", f"[{dims}]"
            raise ValueError(
                f"{name} has shape {tuple(mask.shape)}; allowed: {per_model}={shape} or {per_example}={(batch,) + shape}"
            )
        return mask if mask.is_floating_point() else mask.to(like.dtype)

    @staticmethod
    def _check_probe(name, probe, shape):
        if probe is not None and tuple(probe.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(probe.shape)}; allowed: {shape}")


def _layer_slice(mask, layer, model_dims):
    """Layer `layer` of a per-model ([L, ...], `model_dims` dims) or per-example ([B, L, ...]) mask; a probe
    (model_dims None) is always per example."""
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
