"""A fastticket super ticket as a plain Hugging Face model (written by `fastticket export --format hf-compact`).

Self-contained: torch and transformers only (4.4x and 5.x). Load it with
    AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)
The checkpoint holds only what the ticket kept: layer l has len(kept_heads[l]) attention heads (0: only
W_O's bias is left, if any) and an FFN of ffn_widths[l] neurons (0: the FFN is pruned and the layer adds
nothing there). One encoder covers every family fastticket supports, by options:
- blocks: post-norm LayerNorm(x + f(x)) (BERT, DeBERTa) or pre-norm x + f(norm(x)) with a final norm
  (ModernBERT), linears with or without bias, a GLU feed-forward act(up x) * (gate x);
- positions: a learned absolute table numbered 0, 1, ... or after the padding index (RoBERTa), rotary with a
  global and a local base, a sliding window |t - s| <= w, DeBERTa's relative c2p / p2c attention
  (log buckets, shared keys, LayerNorm-ed relative embeddings);
- the head: pool (first token or mean) -> [dropout] -> dense -> act [-> norm] -> dropout -> out.
Parameter names are fastticket's own (TicketModel.state_dict()).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


class FastTicketConfig(PretrainedConfig):
    """The compact encoder's shapes (kept_heads, ffn_widths per layer) and its family's options."""

    model_type = "fastticket_encoder"

    def __init__(self, vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, kept_heads=None, ffn_widths=None, max_position_embeddings=512,
                 type_vocab_size=2, embedding_size=None, hidden_act="gelu", layer_norm_eps=1e-12,
                 hidden_dropout=0.1, attention_dropout=0.1, output_dropout=0.1, ffn_dropout=0.1,
                 ffn_inner_dropout=0.0, task_dropout=0.1, initializer_range=0.02, pre_norm=False,
                 first_attention_norm=True, attention_bias=True, mlp_bias=True, norm_bias=True, glu=False,
                 absolute_positions=True, position_numbering="from_zero", embedding_projection="after_norm",
                 rotary_theta=None, local_rotary_theta=None, layer_windows=None, relative_attention=False,
                 position_buckets=-1, max_relative_positions=-1, pos_att_type=(), share_att_key=False,
                 norm_rel_ebd=False, pooling="cls", pooler_act="tanh", pooler_dropout=0.0, pooler_bias=True,
                 pooler_norm=False, source_family=None, source_model_type=None, pad_token_id=0, **kwargs):
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        layers = range(num_hidden_layers)
        self.kept_heads = [list(r) for r in kept_heads] if kept_heads is not None else [list(range(num_attention_heads)) for _ in layers]
        self.ffn_widths = list(ffn_widths) if ffn_widths is not None else [intermediate_size for _ in layers]
        self.max_position_embeddings, self.type_vocab_size = max_position_embeddings, type_vocab_size
        self.embedding_size, self.hidden_act, self.layer_norm_eps = embedding_size, hidden_act, layer_norm_eps
        self.hidden_dropout, self.attention_dropout, self.output_dropout = hidden_dropout, attention_dropout, output_dropout
        self.ffn_dropout, self.ffn_inner_dropout, self.task_dropout = ffn_dropout, ffn_inner_dropout, task_dropout
        self.initializer_range, self.pre_norm, self.first_attention_norm = initializer_range, pre_norm, first_attention_norm
        self.attention_bias, self.mlp_bias, self.norm_bias, self.glu = attention_bias, mlp_bias, norm_bias, glu
        self.absolute_positions, self.position_numbering = absolute_positions, position_numbering
        self.embedding_projection = embedding_projection
        self.rotary_theta, self.local_rotary_theta = rotary_theta, local_rotary_theta
        self.layer_windows = list(layer_windows) if layer_windows is not None else [None for _ in layers]
        self.relative_attention, self.position_buckets = relative_attention, position_buckets
        self.max_relative_positions, self.pos_att_type = max_relative_positions, list(pos_att_type)
        self.share_att_key, self.norm_rel_ebd = share_att_key, norm_rel_ebd
        self.pooling, self.pooler_act, self.pooler_dropout = pooling, pooler_act, pooler_dropout
        self.pooler_bias, self.pooler_norm = pooler_bias, pooler_norm
        self.source_family, self.source_model_type = source_family, source_model_type
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def layer_rotary_theta(self, layer: int):
        """The rotary base of a layer: the local one on windowed layers, else the global one (None: no rotary)."""
        if self.rotary_theta is None:
            return None
        return self.local_rotary_theta if self.layer_windows[layer] is not None else self.rotary_theta

    @property
    def relative_span(self) -> int:
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions


class LayerNorm(nn.Module):
    def __init__(self, size: int, eps: float, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size)) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class OutputBias(nn.Module):
    """W_O of a layer that keeps no head: only its bias is left."""

    def __init__(self, hidden: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden))


# ------------------------------------------------------------------------------------------------ positions


def rotary_tables(seq: int, dim: int, theta: float, device):
    """cos, sin [T, D] (fp32): frequencies theta^(-2i/D), each for two channels (the halves rotate together)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim))
    angles = torch.arange(seq, device=device).float()[:, None] * inv_freq[None, :]  # [T, D/2]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x, tables):
    """x [B, H, T, D] rotated by position in fp32: x·cos + rotate_half(x)·sin."""
    cos, sin = tables
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def log_bucket(rel, buckets: int, max_position: int):
    """DeBERTa's log-bucketed distance: exact within ±buckets/2, logarithmic beyond, sign kept (fp32 as HF)."""
    mid = buckets // 2
    sign = torch.sign(rel)
    near = (rel < mid) & (rel > -mid)
    magnitude = torch.where(near, torch.full_like(rel, mid - 1), rel.abs())
    scale = torch.log(torch.tensor((max_position - 1) / mid))
    far = torch.ceil(torch.log(magnitude / mid) / scale * (mid - 1)) + mid
    return torch.where(magnitude <= mid, rel.to(far.dtype), far * sign).long()


def relative_index(seq: int, config: FastTicketConfig, device):
    """int64 [T, T]: the relative-embedding row of (query i, key j), δ(i − j) + span clamped to [0, 2·span)."""
    pos = torch.arange(seq, device=device)
    rel = pos[:, None] - pos[None, :]
    if config.position_buckets > 0 and config.max_relative_positions > 0:
        rel = log_bucket(rel, config.position_buckets, config.max_relative_positions)
    span = config.relative_span
    return (rel + span).clamp(0, 2 * span - 1)


class Embeddings(nn.Module):
    """word [+ absolute position] [+ token type] -> LayerNorm -> dropout, with an optional projection to the
    hidden size after them ("after_norm", bias) or before the LayerNorm ("before_norm", no bias)."""

    def __init__(self, c: FastTicketConfig):
        super().__init__()
        width = c.embedding_size or c.hidden_size
        project = width != c.hidden_size
        self.project_first = project and c.embedding_projection == "before_norm"
        self.numbering, self.pad_token_id = c.position_numbering, c.pad_token_id
        self.word = nn.Embedding(c.vocab_size, width)
        self.position = nn.Embedding(c.max_position_embeddings, width) if c.absolute_positions else None
        self.token_type = nn.Embedding(c.type_vocab_size, width) if c.type_vocab_size > 0 else None
        self.norm = LayerNorm(c.hidden_size if self.project_first else width, c.layer_norm_eps, c.norm_bias)
        self.dropout = nn.Dropout(c.hidden_dropout)
        self.project = nn.Linear(width, c.hidden_size, bias=not self.project_first) if project else None

    def position_ids(self, input_ids):
        if self.numbering == "after_padding":  # RoBERTa: real tokens count from pad + 1, padding stays at pad
            real = input_ids.ne(self.pad_token_id).long()
            return torch.cumsum(real, dim=1) * real + self.pad_token_id
        return torch.arange(input_ids.shape[1], device=input_ids.device)[None, :].expand_as(input_ids)

    def forward(self, input_ids, token_type_ids=None):
        h = self.word(input_ids)
        if self.position is not None:
            h = h + self.position(self.position_ids(input_ids))
        if self.token_type is not None:
            h = h + self.token_type(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        if self.project_first:
            return self.dropout(self.norm(self.project(h)))
        h = self.dropout(self.norm(h))
        return self.project(h) if self.project is not None else h


class Positions(nn.Module):
    """DeBERTa's relative embeddings (+ their LayerNorm)."""

    def __init__(self, c: FastTicketConfig):
        super().__init__()
        self.config = c
        self.relative = nn.Embedding(2 * c.relative_span, c.hidden_size) if c.relative_attention else None
        self.norm = LayerNorm(c.hidden_size, c.layer_norm_eps) if c.relative_attention and c.norm_rel_ebd else None

    def context(self, seq: int, device) -> dict:
        emb = self.relative.weight  # [2S, C]
        return {"relative_embeddings": self.norm(emb) if self.norm is not None else emb,
                "relative_index": relative_index(seq, self.config, device)}


# ----------------------------------------------------------------------------------------------- the block


class Attention(nn.Module):
    """Self-attention over the heads the layer kept; plain torch (softmax(q kᵀ·scale + bias) v)."""

    def __init__(self, c: FastTicketConfig, index: int):
        super().__init__()
        self.num_heads, self.head_dim = len(c.kept_heads[index]), c.head_dim
        self.scale = 1.0 / math.sqrt(c.head_dim * (1 + len(c.pos_att_type)))
        self.pre_norm, self.window, self.theta = c.pre_norm, c.layer_windows[index], c.layer_rotary_theta(index)
        self.c2p = c.relative_attention and "c2p" in c.pos_att_type
        self.p2c = c.relative_attention and "p2c" in c.pos_att_type
        hidden, inner, bias = c.hidden_size, self.num_heads * c.head_dim, c.attention_bias
        self.q = self.k = self.v = self.pos_q = self.pos_k = None
        if self.num_heads:
            self.q, self.k, self.v = (nn.Linear(hidden, inner, bias=bias) for _ in range(3))
            if not c.share_att_key:
                self.pos_k = nn.Linear(hidden, inner) if self.c2p else None
                self.pos_q = nn.Linear(hidden, inner) if self.p2c else None
            self.o = nn.Linear(inner, hidden, bias=bias)
        else:
            self.o = OutputBias(hidden) if bias else None
        self.probs_dropout = nn.Dropout(c.attention_dropout)
        self.pos_dropout = nn.Dropout(c.hidden_dropout)
        self.dropout = nn.Dropout(c.output_dropout)
        has_norm = not c.pre_norm or index > 0 or c.first_attention_norm
        self.norm = LayerNorm(hidden, c.layer_norm_eps, c.norm_bias) if has_norm else None

    def split(self, x):
        """[B, T, h·D] -> [B, h, T, D]"""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, key_mask, positions):
        """x [B, T, C], key_mask bool [B, T] (True: a real token) -> [B, T, C]"""
        if not self.num_heads:  # every head pruned: only W_O's bias (if any) is added
            return self.residual(None if self.o is None else self.o.bias.expand_as(x), x)
        inputs = self.norm(x) if self.pre_norm and self.norm is not None else x
        q, k, v = self.split(self.q(inputs)), self.split(self.k(inputs)), self.split(self.v(inputs))
        if self.theta is not None:
            tables = positions["rotary"][self.theta]
            q, k = apply_rotary(q, tables), apply_rotary(k, tables)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # [B, h, T, T]
        if self.c2p or self.p2c:
            scores = scores + self.relative_scores(q, k, positions)
        scores = scores.masked_fill(~self.allowed(key_mask, x.shape[1]), torch.finfo(scores.dtype).min)
        probs = self.probs_dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)  # [B, T, h·D]
        return self.residual(self.o(ctx), x)

    def allowed(self, key_mask, seq: int):
        """bool [B, 1, T, T]: query t may see key s (a real token, and |t - s| <= window on local layers)."""
        allowed = key_mask[:, None, None, :]
        if self.window is not None:
            pos = torch.arange(seq, device=key_mask.device)
            allowed = allowed & ((pos[:, None] - pos[None, :]).abs() <= self.window)
        return allowed

    def residual(self, out, x):
        if out is None:
            return x if self.pre_norm else self.norm(x)
        out = self.dropout(out)
        return x + out if self.pre_norm else self.norm(out + x)

    def relative_scores(self, q, k, positions):
        """DeBERTa's c2p + p2c terms [B, h, T, T], scaled like the content scores."""
        rel = self.pos_dropout(positions["relative_embeddings"])  # [2S, C]
        index = positions["relative_index"]  # [T, T]
        batch, heads, seq, _ = q.shape
        bias = 0
        if self.c2p:  # q_i · Kr[δ(i, j)]
            pos_k = self.split((self.k if self.pos_k is None else self.pos_k)(rel)[None])[0]  # [h, 2S, D]
            bias = torch.matmul(q, pos_k.transpose(-1, -2)).gather(-1, index.expand(batch, heads, seq, seq))
        if self.p2c:  # k_j · Qr[δ(i, j)]
            pos_q = self.split((self.q if self.pos_q is None else self.pos_q)(rel)[None])[0]
            by_key = torch.matmul(k, pos_q.transpose(-1, -2))  # [B, h, T(key), 2S]
            bias = bias + by_key.gather(-1, index.t().expand(batch, heads, seq, seq)).transpose(-1, -2)
        return bias * self.scale


class FeedForward(nn.Module):
    """down(act(up x) [* gate x]) with the residual; width 0: the FFN is pruned (LayerNorm(x) post-norm, x pre-norm)."""

    def __init__(self, c: FastTicketConfig, index: int):
        super().__init__()
        width, hidden, bias = c.ffn_widths[index], c.hidden_size, c.mlp_bias
        self.present, self.pre_norm = width > 0, c.pre_norm
        self.up = nn.Linear(hidden, width, bias=bias) if width else None
        self.gate = nn.Linear(hidden, width, bias=bias) if width and c.glu else None
        self.down = nn.Linear(width, hidden, bias=bias) if width else None
        self.act = ACTIVATIONS[c.hidden_act]
        self.inner_dropout = nn.Dropout(c.ffn_inner_dropout)
        self.dropout = nn.Dropout(c.ffn_dropout)
        self.norm = LayerNorm(hidden, c.layer_norm_eps, c.norm_bias)

    def ffn(self, x):
        h = self.act(self.up(x))
        if self.gate is not None:
            h = h * self.gate(x)
        return self.dropout(self.down(self.inner_dropout(h)))

    def forward(self, x):
        if not self.present:
            return x if self.pre_norm else self.norm(x)
        if self.pre_norm:
            return x + self.ffn(self.norm(x))
        return self.norm(x + self.ffn(x))


class EncoderLayer(nn.Module):
    def __init__(self, c: FastTicketConfig, index: int):
        super().__init__()
        self.attention = Attention(c, index)
        self.ffn = FeedForward(c, index)

    def forward(self, x, key_mask, positions):
        return self.ffn(self.attention(x, key_mask, positions))


class ClassificationHead(nn.Module):
    def __init__(self, c: FastTicketConfig):
        super().__init__()
        self.pooling = c.pooling
        self.dense = nn.Linear(c.hidden_size, c.hidden_size, bias=c.pooler_bias)
        self.act = ACTIVATIONS[c.pooler_act]
        self.norm = LayerNorm(c.hidden_size, c.layer_norm_eps, c.norm_bias) if c.pooler_norm else None
        self.dropout = nn.Dropout(c.task_dropout)
        if c.pooler_dropout == "task":  # the task dropout module before the dense too (RoBERTa, ELECTRA)
            self.pre_dropout = self.dropout
        else:
            self.pre_dropout = nn.Dropout(float(c.pooler_dropout)) if c.pooler_dropout else None
        self.out = nn.Linear(c.hidden_size, c.num_labels)

    def forward(self, hidden, key_mask):
        """hidden [B, T, C], key_mask bool [B, T] -> logits [B, num_labels]"""
        if self.pooling == "mean":
            real = key_mask[..., None].to(hidden.dtype)
            x = (hidden * real).sum(1) / real.sum(1)
        else:
            x = hidden[:, 0]
        if self.pre_dropout is not None:
            x = self.pre_dropout(x)
        x = self.act(self.dense(x))
        if self.norm is not None:
            x = self.norm(x)
        return self.out(self.dropout(x))


# ----------------------------------------------------------------------------------------------- the model


class FastTicketForSequenceClassification(PreTrainedModel):
    config_class = FastTicketConfig
    base_model_prefix = "fastticket"  # no such submodule: the weights sit at the top level
    main_input_name = "input_ids"

    def __init__(self, config: FastTicketConfig):
        super().__init__(config)
        c = config
        self.num_labels = c.num_labels
        self.embeddings = Embeddings(c)
        self.positions = Positions(c) if c.relative_attention else None
        self.layers = nn.ModuleList(EncoderLayer(c, l) for l in range(c.num_hidden_layers))
        self.final_norm = LayerNorm(c.hidden_size, c.layer_norm_eps, c.norm_bias) if c.pre_norm else None
        self.head = ClassificationHead(c)
        self.post_init()

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, LayerNorm):
            module.weight.data.fill_(1.0)
        if isinstance(module, (LayerNorm, OutputBias)) and module.bias is not None:
            module.bias.data.zero_()

    def get_input_embeddings(self):
        return self.embeddings.word

    def set_input_embeddings(self, value):
        self.embeddings.word = value

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, return_dict=None, **kwargs):
        """input_ids [B, T], attention_mask [B, T] (1: a real token), token_type_ids [B, T] -> logits [B, num_labels]"""
        key_mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        h = self.embeddings(input_ids, token_type_ids)
        positions = self.position_context(input_ids.shape[1], h.device)
        for layer in self.layers:
            h = layer(h, key_mask, positions)
        if self.final_norm is not None:
            h = self.final_norm(h)
        logits = self.head(h, key_mask)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = F.cross_entropy(logits, labels.long())
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def position_context(self, seq: int, device) -> dict:
        """What every layer of one forward shares: rotary tables per base, DeBERTa's relative embeddings."""
        c = self.config
        thetas = sorted({c.layer_rotary_theta(l) for l in range(c.num_hidden_layers)} - {None})
        out = {"rotary": {theta: rotary_tables(seq, c.head_dim, theta, device) for theta in thetas}}
        if self.positions is not None:
            out.update(self.positions.context(seq, device))
        return out
