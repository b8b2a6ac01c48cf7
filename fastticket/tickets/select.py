"""ft.select: cut a ticket at a sparsity level from importance scores (ARCHITECTURE §1).

n_h = round(s·L·H) heads and n_f = round(s·L) FFNs are pruned (round half up). Heads are ranked globally
after each layer's scores are divided by their ℓ2 norm (normalize=True) and pruned in rank order while
every layer keeps at least `min_heads_per_layer`: lowest first for `winning`, highest first for
`losing`, a seeded uniform permutation for `random`. Ties go to the lower (layer, head) index first.
"""

from __future__ import annotations

import math
import numbers

import torch

from .importance import Importance
from .ticket import Ticket

KINDS = ("winning", "random", "losing")


def select(scores: Importance, sparsity: float, kind: str = "winning", seed: int = 0, normalize: bool = True,
           min_heads_per_layer: int = 1, ffn_sparsity: float | None = None) -> Ticket:
    """ffn_sparsity: the fraction of FFNs pruned, in [0, 1), when it differs from the heads' `sparsity`."""
    if not isinstance(scores, Importance):
        raise ValueError(f"scores must be an ft.Importance; got {type(scores).__name__}")
    check_level(sparsity, kind)
    check_ffn_level(ffn_sparsity)
    layers, heads = scores.heads.shape
    if not isinstance(min_heads_per_layer, int) or not 0 <= min_heads_per_layer <= heads:
        raise ValueError(f"min_heads_per_layer={min_heads_per_layer!r}; allowed: an integer in [0, {heads}]")
    n_heads = round_half_up(sparsity * layers * heads)
    n_ffn = round_half_up((sparsity if ffn_sparsity is None else ffn_sparsity) * layers)
    if n_heads > layers * (heads - min_heads_per_layer):
        raise ValueError(f"sparsity={sparsity} prunes {n_heads} of {layers * heads} heads, more than min_heads_per_layer="
                         f"{min_heads_per_layer} allows ({layers * (heads - min_heads_per_layer)})")

    head_scores = normalized_head_scores(scores) if normalize else scores.heads
    gen = torch.Generator().manual_seed(seed)
    head_order = _order(head_scores.flatten(), kind, gen)
    ffn_order = _order(scores.ffn, kind, gen)

    kept = torch.ones(layers, heads, dtype=torch.bool)
    budget = [heads - min_heads_per_layer] * layers
    pruned = 0
    for flat in head_order.tolist():
        if pruned == n_heads:
            break
        layer, head = divmod(flat, heads)
        if budget[layer] > 0:
            kept[layer, head] = False
            budget[layer] -= 1
            pruned += 1
    ffn_kept = torch.ones(layers, dtype=torch.bool)
    ffn_kept[ffn_order[:n_ffn]] = False
    meta = {"sparsity": float(sparsity), "kind": kind, "seed": int(seed), "estimator": scores.estimator,
            "normalize": bool(normalize), "min_heads_per_layer": int(min_heads_per_layer)}
    if ffn_sparsity is not None:
        meta["ffn_sparsity"] = float(ffn_sparsity)
    return Ticket(kept, ffn_kept, meta)


def normalized_head_scores(scores: Importance) -> torch.Tensor:
    """Head scores divided by the ℓ2 norm of their layer (a layer of zeros stays zero)."""
    norms = scores.heads.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, scores.heads / norms.clamp_min(1e-300), scores.heads)


def check_level(sparsity, kind: str = "winning") -> None:
    """One ValueError for a sparsity outside (0, 1) or an unknown kind (callers check before long work)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity!r} is outside the allowed range (0, 1) (the fraction pruned)")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is unknown; allowed: {KINDS}")


def check_ffn_level(ffn_sparsity) -> None:
    """None (the heads' level) or a fraction of FFNs pruned in [0, 1)."""
    if ffn_sparsity is not None and (isinstance(ffn_sparsity, bool) or not isinstance(ffn_sparsity, numbers.Real)
                                     or not 0.0 <= ffn_sparsity < 1.0):
        raise ValueError(f"ffn_sparsity={ffn_sparsity!r} is outside the allowed range [0, 1) (the fraction of FFNs pruned)")


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def _order(values: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Indices in pruning order; stable, so ties keep index order."""
    if kind == "random":
        return torch.randperm(values.numel(), generator=gen)
    return torch.sort(values, descending=(kind == "losing"), stable=True).indices
