"""Token embeddings and the position schemes: absolute tables (in Embeddings), rotary (RoPE) and DeBERTa's
relative positions (Positions, which builds the per-forward PositionContext every layer reads)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .config import EncoderConfig
from .families import get_family


class LayerNorm(nn.Module):
    """Weight and (optionally) bias only, so the fused op can take them; F.layer_norm where nothing is masked."""

    def __init__(self, size: int, eps: float, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size)) if bias else None
        self.eps = eps

    def forward(self, x):
        return nn.functional.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class Embeddings(nn.Module):
    """word [+ absolute position] [+ token type], then LayerNorm and dropout; an embedding narrower than the
    hidden size is projected after them (ELECTRA, with bias) or before the LayerNorm (DeBERTa, no bias)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        project = width != config.hidden_size
        self.project_first = project and config.embedding_projection == "before_norm"
        self.family = config.family  # its adapter numbers the absolute positions (RoBERTa: after padding)
        self.pad_token_id = config.pad_token_id
        self.word = nn.Embedding(config.vocab_size, width)
        self.position = nn.Embedding(config.max_position_embeddings, width) if config.absolute_positions else None
        self.token_type = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size > 0 else None
        self.norm = LayerNorm(config.hidden_size if self.project_first else width, config.layer_norm_eps, config.norm_bias)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.project = nn.Linear(width, config.hidden_size, bias=not self.project_first) if project else None

    def forward(self, input_ids, token_type_ids=None):
        h = self.word(input_ids)
        if self.position is not None:
            h = h + self.position(get_family(self.family).position_ids(input_ids, self.pad_token_id))
        if self.token_type is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            h = h + self.token_type(token_type_ids)
        if self.project_first:
            return self.dropout(self.norm(self.project(h)))
        h = self.dropout(self.norm(h))
        return self.project(h) if self.project is not None else h


@dataclass
class PositionContext:
    """What the layers of one forward share: rotary tables per base (cos, sin [T, D], fp32) and DeBERTa's
    relative embeddings [2S, C] with the table row of every (query, key) pair, int64 [T, T]."""

    rotary: dict = field(default_factory=dict)
    relative_embeddings: torch.Tensor | None = None
    relative_index: torch.Tensor | None = None


class Positions(nn.Module):
    """The encoder-level position state: DeBERTa's relative embeddings (+ their LayerNorm), the rotary bases."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.thetas = sorted({t for t in (config.layer_rope_theta(l) for l in range(config.num_layers)) if t is not None})
        self.relative = self.norm = None
        if config.relative_attention:
            self.span, self.buckets, self.max_relative = config.relative_span, config.position_buckets, config.max_relative_positions
            self.relative = nn.Embedding(2 * self.span, config.hidden_size)
            self.norm = LayerNorm(config.hidden_size, config.layer_norm_eps) if config.norm_rel_ebd else None

    def context(self, seq: int, device) -> PositionContext:
        out = PositionContext()
        for theta in self.thetas:
            out.rotary[theta] = rotary_tables(seq, self.head_dim, theta, device)
        if self.relative is not None:
            emb = self.relative.weight
            out.relative_embeddings = self.norm(emb) if self.norm is not None else emb
            out.relative_index = relative_index(seq, self.span, self.buckets, self.max_relative, device)
        return out


def rotary_tables(seq: int, dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, D] in fp32 for positions 0..T-1: frequencies theta^(-2i/D), each used for two channels
    (the halves of the head dim rotate together)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim))
    angles = torch.arange(seq, device=device).float()[:, None] * inv_freq[None, :]  # [T, D/2]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x [B, H, T, D] rotated by position (in fp32, rounded once): x·cos + rotate_half(x)·sin."""
    cos, sin = tables
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def relative_index(seq: int, span: int, buckets: int, max_position: int, device) -> torch.Tensor:
    """int64 [T, T]: the relative-embedding row of query i and key j, δ(i − j) + span clamped to [0, 2·span)."""
    pos = torch.arange(seq, device=device)
    rel = pos[:, None] - pos[None, :]
    if buckets > 0 and max_position > 0:
        rel = log_bucket(rel, buckets, max_position)
    return (rel + span).clamp(0, 2 * span - 1)


def log_bucket(rel: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa's log-bucketed distance: exact within ±buckets/2, logarithmic beyond up to max_position, sign
    kept. Computed in fp32 as Hugging Face computes it, so bucket boundaries agree exactly."""
    mid = buckets // 2
    sign = torch.sign(rel)
    near = (rel < mid) & (rel > -mid)
    magnitude = torch.where(near, torch.full_like(rel, mid - 1), rel.abs())
    scale = torch.log(torch.tensor((max_position - 1) / mid))
    far = torch.ceil(torch.log(magnitude / mid) / scale * (mid - 1)) + mid
    return torch.where(magnitude <= mid, rel.to(far.dtype), far * sign).long()

