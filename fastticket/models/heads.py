"""The classification head every family shares: out(dropout(pool(hidden, lengths))).

pool: the first token ("cls") or the mean over real tokens ("mean"), [a dropout,] dense, act [, norm] —
"the pooler". Whether it is pre-trained (BERT's pooler, DeBERTa's ContextPooler, ModernBERT's prediction
head: kept when the task layer is re-initialized) or part of the task layer is the family's answer
(config.pooler_is_pretrained). Per family: BERT pooler(tanh); RoBERTa dropout, dense, tanh (the task
dropout twice); ELECTRA the same with gelu; DistilBERT pre_classifier with ReLU; DeBERTa dropout
(pooler_dropout), dense, pooler_hidden_act; ModernBERT dense, act, norm.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import activation
from .config import EncoderConfig
from .positions import LayerNorm


class ClassificationHead(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        c = config
        self.pooling = c.pooling
        self.dense = nn.Linear(c.hidden_size, c.hidden_size, bias=c.pooler_bias)
        self.act = activation(c.pooler_act)
        self.norm = LayerNorm(c.hidden_size, c.layer_norm_eps, c.norm_bias) if c.pooler_norm else None
        self.dropout = nn.Dropout(c.task_dropout)
        if c.pooler_dropout == "task":  # RoBERTa / ELECTRA: the same dropout module before the dense too
            self.pre_dropout = self.dropout
        else:
            self.pre_dropout = nn.Dropout(float(c.pooler_dropout)) if c.pooler_dropout else None
        self.out = nn.Linear(c.hidden_size, c.num_labels)

    def pool(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """hidden [B, T, C], lengths int [B] (right padding) or None -> the pooled features [B, C]."""
        if self.pooling == "mean":
            if lengths is None:
                x = hidden.mean(1)
            else:
                real = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]  # [B, T]
                x = (hidden * real[..., None].to(hidden.dtype)).sum(1) / lengths[:, None].to(hidden.dtype)
        else:
            x = hidden[:, 0]
        if self.pre_dropout is not None:
            x = self.pre_dropout(x)
        x = self.act(self.dense(x))
        return self.norm(x) if self.norm is not None else x

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.dropout(self.pool(hidden, lengths)))

    def pooler_modules(self) -> list[nn.Module]:
        """The modules with the pooler's parameters (dense [, norm]), e.g. to copy or re-initialize them."""
        return [self.dense] + ([self.norm] if self.norm is not None else [])
