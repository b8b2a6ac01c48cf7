"""Ticket: which heads and FFNs survive (True = kept), saved as plain JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..utils import atomic_write_text

FORMAT = "fastticket.ticket"


@dataclass
class Ticket:
    """heads: bool [L, H] (True = kept); ffn: bool [L]; meta: how it was cut (sparsity, kind, seed, ...)."""

    heads: torch.Tensor
    ffn: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.heads, self.ffn = _as_keep_mask("heads", self.heads), _as_keep_mask("ffn", self.ffn)
        if self.heads.dim() != 2 or self.ffn.dim() != 1 or self.ffn.shape[0] != self.heads.shape[0]:
            raise ValueError(f"Ticket needs heads [L, H] and ffn [L]; got {tuple(self.heads.shape)} and {tuple(self.ffn.shape)}")

    @property
    def num_layers(self) -> int:
        return self.heads.shape[0]

    @property
    def num_heads(self) -> int:
        return self.heads.shape[1]

    def head_mask(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """[L, H] float mask for model(..., head_mask=...)."""
        return self.heads.to(device=device, dtype=dtype)

    def ffn_mask(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """[L] float mask for model(..., ffn_mask=...)."""
        return self.ffn.to(device=device, dtype=dtype)

    def __eq__(self, other) -> bool:
        return isinstance(other, Ticket) and torch.equal(self.heads, other.heads) and torch.equal(self.ffn, other.ffn)

    def __repr__(self) -> str:
        return (f"Ticket(heads kept {int(self.heads.sum())}/{self.heads.numel()} per layer "
                f"{self.heads.sum(1).tolist()}, ffn kept {int(self.ffn.sum())}/{self.ffn.numel()}, meta={self.meta})")

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "heads": self.heads.int().tolist(), "ffn": self.ffn.int().tolist(),
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "Ticket":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"format is {d.get('format') if isinstance(d, dict) else type(d).__name__!r}; expected {FORMAT!r}")
        heads, ffn = d.get("heads"), d.get("ffn")
        if not isinstance(heads, list) or not heads or not all(isinstance(r, list) and r for r in heads):
            raise ValueError("'heads' must be a non-empty list of non-empty lists of 0/1")
        if len({len(r) for r in heads}) != 1:
            raise ValueError(f"'heads' rows have different lengths {sorted({len(r) for r in heads})}")
        if not isinstance(ffn, list) or len(ffn) != len(heads):
            raise ValueError(f"'ffn' must be a list of {len(heads)} 0/1 values (one per layer)")
        values = [v for r in heads for v in r] + list(ffn)
        if not all(v in (0, 1) and not isinstance(v, float) for v in values):
            raise ValueError("'heads' and 'ffn' may hold only 0/1 (or true/false)")
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise ValueError("'meta' must be an object")
        return cls(torch.tensor(heads, dtype=torch.bool), torch.tensor(ffn, dtype=torch.bool), meta)

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> "Ticket":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
            return cls.from_dict(d)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"ticket file {os.fspath(path)!r} is not a valid ticket: {exc}") from None


def _as_keep_mask(name: str, values) -> torch.Tensor:
    t = torch.as_tensor(values).detach().cpu()
    if t.dtype != torch.bool and not ((t == 0) | (t == 1)).all():
        raise ValueError(f"Ticket {name} must be bool or 0/1 (True = kept); got values {t.unique().tolist()[:5]}")
    return t.bool()
