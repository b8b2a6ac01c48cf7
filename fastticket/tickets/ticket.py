"""Ticket: which heads, FFNs and (optionally) FFN neurons survive (True = kept), saved as plain JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..utils import atomic_write_text

FORMAT = "fastticket.ticket"


@dataclass
class Ticket:
    """heads: bool [L, H] (True = kept); ffn: bool [L]; meta: how it was cut (sparsity, kind, seed, ...);
    neurons: optional bool [L, I] over each FFN's intermediate neurons (neuron-level pruning; None = every
    neuron of a kept FFN). A kept FFN keeps at least one neuron; a pruned FFN's row is ignored."""

    heads: torch.Tensor
    ffn: torch.Tensor
    meta: dict = field(default_factory=dict)
    neurons: torch.Tensor | None = None

    def __post_init__(self):
        self.heads, self.ffn = _as_keep_mask("heads", self.heads), _as_keep_mask("ffn", self.ffn)
        if self.heads.dim() != 2 or self.ffn.dim() != 1 or self.ffn.shape[0] != self.heads.shape[0]:
            raise ValueError(f"Ticket needs heads [L, H] and ffn [L]; got {tuple(self.heads.shape)} and {tuple(self.ffn.shape)}")
        if self.neurons is not None:
            self.neurons = _as_keep_mask("neurons", self.neurons)
            if self.neurons.dim() != 2 or self.neurons.shape[0] != self.num_layers or self.neurons.shape[1] < 1:
                raise ValueError(f"Ticket neurons must be [L, I] with L={self.num_layers}; got {tuple(self.neurons.shape)}")
            empty = [l for l in range(self.num_layers) if self.ffn[l] and not self.neurons[l].any()]
            if empty:
                raise ValueError(f"Ticket keeps the FFN of layers {empty} but none of their neurons; allowed: at least "
                                 f"one neuron per kept FFN (prune the FFN: ffn[l] = False)")

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

    def neuron_mask(self, dtype=torch.float32, device=None) -> torch.Tensor | None:
        """[L, I] float mask for model(..., neuron_mask=...), or None for a ticket without neurons."""
        return None if self.neurons is None else self.neurons.to(device=device, dtype=dtype)

    def kept_neurons(self) -> torch.Tensor | None:
        """bool [L, I]: the neurons that compute something (a pruned FFN's row all False); None without neurons."""
        return None if self.neurons is None else self.neurons & self.ffn[:, None]

    def __eq__(self, other) -> bool:
        """Same heads and FFNs, and the same neurons in kept FFNs (None equals all kept)."""
        if not (isinstance(other, Ticket) and torch.equal(self.heads, other.heads) and torch.equal(self.ffn, other.ffn)):
            return False
        mine, theirs = self.kept_neurons(), other.kept_neurons()
        if mine is None and theirs is None:
            return True
        if mine is None or theirs is None:
            given = mine if theirs is None else theirs
            return torch.equal(given, self.ffn[:, None].expand_as(given))
        return torch.equal(mine, theirs)

    def __repr__(self) -> str:
        neurons = "" if self.neurons is None else f", neurons kept per layer {self.kept_neurons().sum(1).tolist()}"
        return (f"Ticket(heads kept {int(self.heads.sum())}/{self.heads.numel()} per layer "
                f"{self.heads.sum(1).tolist()}, ffn kept {int(self.ffn.sum())}/{self.ffn.numel()}{neurons}, meta={self.meta})")

    def to_dict(self) -> dict:
        """JSON-ready; neurons (when present) as one string of 0/1 per layer, so large FFNs stay short."""
        d = {"format": FORMAT, "version": 1, "heads": self.heads.int().tolist(), "ffn": self.ffn.int().tolist(),
             "meta": self.meta}
        if self.neurons is not None:
            d["neurons"] = ["".join("1" if v else "0" for v in row) for row in self.neurons.tolist()]
        return d

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
        neurons = _neurons_from_json(d.get("neurons"), len(heads))
        return cls(torch.tensor(heads, dtype=torch.bool), torch.tensor(ffn, dtype=torch.bool), meta, neurons)

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


def _neurons_from_json(rows, layers: int) -> torch.Tensor | None:
    """'neurons': absent/null (none), or one string of 0/1 per layer, all of one length."""
    if rows is None:
        return None
    if (not isinstance(rows, list) or len(rows) != layers or not all(isinstance(r, str) and r for r in rows)
            or len({len(r) for r in rows}) != 1 or any(set(r) - {"0", "1"} for r in rows)):
        raise ValueError(f"'neurons' must be a list of {layers} strings of 0/1 of one length (one per layer)")
    return torch.tensor([[c == "1" for c in r] for r in rows], dtype=torch.bool)


def _as_keep_mask(name: str, values) -> torch.Tensor:
    t = torch.as_tensor(values).detach().cpu()
    if t.dtype != torch.bool and not ((t == 0) | (t == 1)).all():
        raise ValueError(f"Ticket {name} must be bool or 0/1 (True = kept); got values {t.unique().tolist()[:5]}")
    return t.bool()
