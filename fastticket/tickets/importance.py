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
granularity="neuron" adds a per-example neuron mask [B, L, I] on every FFN's inner activation to the same
pass: Importance.neurons [L, I] holds the same estimator per intermediate neuron (`official`: Σ_t |r_t,i|
with r_t,i = ∂L/∂h_t,i · h_t,i).
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
GRANULARITIES = ("ffn", "neuron")


@dataclass
class Importance:
    """Raw (unnormalized) scores: heads [L, H], ffn [L], with the estimator and the examples they saw;
    neurons [L, I] per FFN neuron when scored with granularity="neuron" (else None)."""

    heads: torch.Tensor
    ffn: torch.Tensor
    estimator: str = "paper"
    num_examples: int = 0
    neurons: torch.Tensor | None = None

    def __post_init__(self):
        self.heads = torch.as_tensor(self.heads, dtype=torch.float64).detach().cpu()
        self.ffn = torch.as_tensor(self.ffn, dtype=torch.float64).detach().cpu()
        if self.heads.dim() != 2 or self.ffn.dim() != 1 or self.ffn.shape[0] != self.heads.shape[0]:
            raise ValueError(f"Importance needs heads [L, H] and ffn [L]; got {tuple(self.heads.shape)} and {tuple(self.ffn.shape)}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator {self.estimator!r} is unknown; allowed: {ESTIMATORS}")
        scores = [self.heads, self.ffn]
        if self.neurons is not None:
            self.neurons = torch.as_tensor(self.neurons, dtype=torch.float64).detach().cpu()
            if self.neurons.dim() != 2 or self.neurons.shape[0] != self.heads.shape[0] or self.neurons.shape[1] < 1:
                raise ValueError(f"Importance neurons must be [L, I] with L={self.heads.shape[0]}; got {tuple(self.neurons.shape)}")
            scores.append(self.neurons)
        if not all(torch.isfinite(t).all() for t in scores):
            raise ValueError("Importance scores contain NaN or inf")

    def to_dict(self) -> dict:
        d = {"format": "fastticket.importance", "version": 1, "estimator": self.estimator,
             "num_examples": self.num_examples, "heads": self.heads.tolist(), "ffn": self.ffn.tolist()}
        if self.neurons is not None:
            d["neurons"] = self.neurons.tolist()
        return d

    def save(self, path: str) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str) -> "Importance":
        try:
            with open(path) as f:
                d = json.load(f)
            if d.get("format") != "fastticket.importance":
                raise ValueError(f"format is {d.get('format')!r}, not 'fastticket.importance'")
            return cls(d["heads"], d["ffn"], d["estimator"], int(d["num_examples"]), d.get("neurons"))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"importance file {os.fspath(path)!r} is not valid: {exc}") from None


def importance(model, data, estimator: str = "paper", batch_size: int = 32, backend: str = "auto",
               progress: bool = True, granularity: str = "ffn") -> Importance:
    """Scores every head and FFN of `model` on labeled `data` (a Task split, a datasets.Dataset, or an
    iterable of dict batches with "labels"); see the module docstring for the estimators.
    granularity="neuron": every FFN neuron too (Importance.neurons [L, I]), from the same backward."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator {estimator!r} is unknown; allowed: {ESTIMATORS}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is unknown; allowed: {GRANULARITIES}")
    cfg = model.config
    device = next(model.parameters()).device
    shapes = [(cfg.num_layers, cfg.num_heads), (cfg.num_layers,)]
    if granularity == "neuron":
        shapes.append((cfg.num_layers, cfg.intermediate_size))
    sums = [torch.zeros(shape, dtype=torch.float64, device=device) for shape in shapes]
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
                for running, part in zip(sums, _batch_scores(model, batch, estimator, device, backend, len(shapes) == 3)):
                    running += part
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
    heads, ffn, *neurons = (s / divisor for s in sums)
    return Importance(heads, ffn, estimator, seen, neurons[0] if neurons else None)


def _batch_scores(model, batch, estimator, device, backend, with_neurons=False):
    """This batch's contribution to the running sums of head [L, H], FFN [L] (and neuron [L, I]) scores
    (float64)."""
    cfg = model.config
    inputs = {k: v.to(device) for k, v in batch.items()}
    labels = inputs.pop("labels")
    b = inputs["input_ids"].shape[0]
    dtype = next(model.parameters()).dtype
    masks = {"head": (b, cfg.num_layers, cfg.num_heads), "ffn": (b, cfg.num_layers)}
    if with_neurons:
        masks["neuron"] = (b, cfg.num_layers, cfg.intermediate_size)
    masks = {name: torch.ones(shape, device=device, dtype=dtype, requires_grad=True) for name, shape in masks.items()}
    probes = {}
    if estimator == "official":
        probes = {f"{name}_probe": torch.zeros_like(mask, requires_grad=True) for name, mask in masks.items()}
    wrt = list(probes.values()) if probes else list(masks.values())
    kwargs = {f"{name}_mask": mask for name, mask in masks.items()}
    logits = model(**inputs, **kwargs, backend=backend, **probes).logits
    loss = task_loss(logits, labels, reduction="sum")  # Σ_x L(x): per-example gradients, exactly
    grads = [g.double() for g in torch.autograd.grad(loss, wrt, materialize_grads=True)]
    if estimator in ("paper", "official"):
        return [g.abs().sum(0) for g in grads]
    means = [g.sum(0) / b for g in grads]
    if estimator == "batch":
        return [m.abs() for m in means]
    return [m.square() for m in means]
