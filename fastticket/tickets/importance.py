"""ft.importance: head and FFN importance scores from one backward pass per batch.

Every estimator comes from the same pass: the masks are expanded per example ([B, L, H] and [B, L], all
ones, requires_grad) and the backward of Σ_x L(x) gives g_x = ∂L(x)/∂ξ_x for every example x exactly,
since examples do not interact in eval mode. Then
  paper:    (1/N) Σ_x |g_x|
  official: (1/N) Σ_x Σ_t |r_{x,t}|, r_t = ⟨∂L/∂ctx_t, ctx_t⟩ (abs probes; what the authors' code sums)
  batch:    mean over batches of |ḡ_b|, ḡ_b = (1/B) Σ_{x∈b} g_x, the gradient of the batch-mean loss
  fisher:   Σ over batches of ḡ_b²
Only the mask gradients are asked of autograd, so no weight gradient is computed. On a compact (rewound)
model the masks keep the original [L, H] layout: what it does not hold scores zero.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..data.batching import iterate_batches, num_examples
from ..models.encoder import task_loss
from ..utils import atomic_write_text

ESTIMATORS = ("paper", "official", "batch", "fisher")


@dataclass
class Importance:
    """Raw (unnormalized) scores: heads [L, H], ffn [L], with the estimator and the examples they saw."""

    heads: torch.Tensor
    ffn: torch.Tensor
    estimator: str = "paper"
    num_examples: int = 0

    def __post_init__(self):
        self.heads = torch.as_tensor(self.heads, dtype=torch.float64).detach().cpu()
        self.ffn = torch.as_tensor(self.ffn, dtype=torch.float64).detach().cpu()
        if self.heads.dim() != 2 or self.ffn.dim() != 1 or self.ffn.shape[0] != self.heads.shape[0]:
            raise ValueError(f"Importance needs heads [L, H] and ffn [L]; got {tuple(self.heads.shape)} and {tuple(self.ffn.shape)}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator {self.estimator!r} is unknown; allowed: {ESTIMATORS}")
        if not (torch.isfinite(self.heads).all() and torch.isfinite(self.ffn).all()):
            raise ValueError("Importance scores contain NaN or inf")

    def to_dict(self) -> dict:
        return {"format": "fastticket.importance", "version": 1, "estimator": self.estimator,
                "num_examples": self.num_examples, "heads": self.heads.tolist(), "ffn": self.ffn.tolist()}

    def save(self, path: str) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str) -> "Importance":
        try:
            with open(path) as f:
                d = json.load(f)
            if d.get("format") != "fastticket.importance":
                raise ValueError(f"format is {d.get('format')!r}, not 'fastticket.importance'")
            return cls(d["heads"], d["ffn"], d["estimator"], int(d["num_examples"]))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"importance file {os.fspath(path)!r} is not valid: {exc}") from None


def importance(model, data, estimator: str = "paper", batch_size: int = 32, backend: str = "auto",
               progress: bool = True) -> Importance:
    """Scores every head and FFN of `model` on labeled `data` (a Task split, a datasets.Dataset, or an
    iterable of dict batches with "labels"); see the module docstring for the estimators."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator {estimator!r} is unknown; allowed: {ESTIMATORS}")
    cfg = model.config
    device = next(model.parameters()).device
    heads = torch.zeros(cfg.num_layers, cfg.num_heads, dtype=torch.float64, device=device)
    ffn = torch.zeros(cfg.num_layers, dtype=torch.float64, device=device)
    seen = batches = 0
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:  # only mask gradients are wanted: autograd then keeps nothing for weight gradients
        p.requires_grad_(False)
    try:
        total = num_examples(data)
        with tqdm(total=total, desc=f"importance ({estimator})", unit="ex", disable=not progress) as bar:
            for batch in iterate_batches(data, batch_size, cfg.pad_token_id):
                g_heads, g_ffn = _batch_scores(model, batch, estimator, device, backend)
                heads += g_heads
                ffn += g_ffn
                n = batch["input_ids"].shape[0]
                seen += n
                batches += 1
                bar.update(n)
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(True)
    if seen == 0:
        raise ValueError("data has no examples")
    divisor = {"paper": seen, "official": seen, "batch": batches, "fisher": 1}[estimator]
    return Importance(heads / divisor, ffn / divisor, estimator, seen)


def _batch_scores(model, batch, estimator, device, backend):
    """This batch's contribution to the running sums of head [L, H] and FFN [L] scores (float64)."""
    cfg = model.config
    inputs = {k: v.to(device) for k, v in batch.items()}
    labels = inputs.pop("labels")
    b = inputs["input_ids"].shape[0]
    dtype = next(model.parameters()).dtype
    head_mask = torch.ones(b, cfg.num_layers, cfg.num_heads, device=device, dtype=dtype, requires_grad=True)
    ffn_mask = torch.ones(b, cfg.num_layers, device=device, dtype=dtype, requires_grad=True)
    wrt = [head_mask, ffn_mask]
    probes = {}
    if estimator == "official":
        probes = {"head_probe": torch.zeros_like(head_mask, requires_grad=True),
                  "ffn_probe": torch.zeros_like(ffn_mask, requires_grad=True)}
        wrt = list(probes.values())
    logits = model(**inputs, head_mask=head_mask, ffn_mask=ffn_mask, backend=backend, **probes).logits
    loss = task_loss(logits, labels, reduction="sum")  # Σ_x L(x): per-example gradients, exactly
    g_heads, g_ffn = (g.double() for g in torch.autograd.grad(loss, wrt, materialize_grads=True))
    if estimator in ("paper", "official"):
        return g_heads.abs().sum(0), g_ffn.abs().sum(0)
    mean_heads, mean_ffn = g_heads.sum(0) / b, g_ffn.sum(0) / b
    if estimator == "batch":
        return mean_heads.abs(), mean_ffn.abs()
    return mean_heads.square(), mean_ffn.square()
