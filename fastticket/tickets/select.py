"""ft.select: cut a ticket at a sparsity level from importance scores (docs/method.md §3).

n_h = round(s·L·H) heads and n_f = round(s·L) FFNs are pruned (round half up). Heads are ranked globally
after each layer's scores are divided by their ℓ2 norm (normalize=True) and pruned in rank order while
every layer keeps at least `min_heads_per_layer`: lowest first for `winning`, highest first for
`losing`, a seeded uniform permutation for `random`. Ties go to the lower (layer, head) index first.

granularity="neuron" (neuron-level FFN pruning) replaces whole-FFN pruning: at the FFN level f, neurons are
ranked in the same orders (scores divided by their layer's ℓ2 norm when normalize=True), globally over all
L·I neurons (per_layer=False) or within each layer. Globally, the L·I − round(f·L·I) best-ranked neurons are
kept and each layer's count is rounded to the nearest width in {0, m, 2m, ...} (m = neuron_multiple, ties
up; I itself is allowed too; no width above I); per layer, I − round(f·I) is rounded the same way. Each
layer keeps its best-ranked neurons up to that width; a layer left with 0 neurons has its FFN pruned.
"""

from __future__ import annotations

import math
import numbers

import torch

from .importance import GRANULARITIES, Importance
from .ticket import Ticket

KINDS = ("winning", "random", "losing")


def select(scores: Importance, sparsity: float, kind: str = "winning", seed: int = 0, normalize: bool = True,
           min_heads_per_layer: int = 1, ffn_sparsity: float | None = None, *, granularity: str = "ffn",
           neuron_multiple: int = 64, per_layer: bool = False) -> Ticket:
    """ffn_sparsity: the fraction of FFNs pruned (of FFN neurons with granularity="neuron"), in [0, 1), when it
    differs from the heads' `sparsity`. granularity, neuron_multiple, per_layer: see the module docstring."""
    if not isinstance(scores, Importance):
        raise ValueError(f"scores must be an ft.Importance; got {type(scores).__name__}")
    check_level(sparsity, kind)
    check_ffn_level(ffn_sparsity)
    if _is_integer(neuron_multiple):
        neuron_multiple = int(neuron_multiple)  # numpy's too; check_granularity (shared with search) wants an int
    check_granularity(granularity, neuron_multiple, scores)
    layers, heads = scores.heads.shape
    if not _is_integer(min_heads_per_layer) or not 0 <= min_heads_per_layer <= heads:
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
    meta = {"sparsity": float(sparsity), "kind": kind, "seed": int(seed), "estimator": scores.estimator,
            "normalize": bool(normalize), "min_heads_per_layer": int(min_heads_per_layer)}
    if ffn_sparsity is not None:
        meta["ffn_sparsity"] = float(ffn_sparsity)
    if granularity == "ffn":
        ffn_kept = torch.ones(layers, dtype=torch.bool)
        ffn_kept[ffn_order[:n_ffn]] = False
        return Ticket(kept, ffn_kept, meta)
    fraction = sparsity if ffn_sparsity is None else ffn_sparsity
    neurons = select_neurons(scores.neurons, fraction, kind, gen, normalize, neuron_multiple, per_layer)
    meta.update(granularity="neuron", neuron_multiple=int(neuron_multiple), per_layer=bool(per_layer))
    return Ticket(kept, neurons.any(1), meta, neurons)


def select_neurons(scores: torch.Tensor, fraction: float, kind: str, gen: torch.Generator, normalize: bool,
                   multiple: int, per_layer: bool) -> torch.Tensor:
    """bool [L, I]: the neurons kept at FFN level `fraction` (the rule in the module docstring)."""
    layers, width = scores.shape
    if normalize:
        scores = layer_normalized(scores)
    if per_layer:
        orders = [_order(scores[l], kind, gen) for l in range(layers)]  # within the layer, pruning order
        counts = [width - round_half_up(fraction * width)] * layers
    else:
        order = _order(scores.flatten(), kind, gen)
        keep = layers * width - round_half_up(fraction * layers * width)
        best = order.flip(0)[:keep]  # the last pruned are the best ranked
        counts = torch.bincount(best // width, minlength=layers).tolist()
        rank = torch.empty(layers * width, dtype=torch.long)
        rank[order] = torch.arange(layers * width)
        orders = [torch.sort(rank[l * width:(l + 1) * width], stable=True).indices for l in range(layers)]
    kept = torch.zeros(layers, width, dtype=torch.bool)
    for l in range(layers):
        n = round_width(counts[l], multiple, width)
        if n:
            kept[l, orders[l].flip(0)[:n]] = True
    return kept


def round_width(count: int, multiple: int, width: int) -> int:
    """`count` neurons rounded to the nearest multiple of `multiple` (ties up), or to `width` itself when
    that is nearer than the largest multiple below it; never above `width`."""
    allowed = sorted(set(range(0, width + 1, multiple)) | {width})
    return min(allowed, key=lambda w: (abs(w - count), -w))


def check_granularity(granularity: str, neuron_multiple, scores: Importance | None = None,
                      intermediate_size: int | None = None) -> None:
    """One ValueError for an unknown granularity, a bad width multiple, or neuron selection without neuron
    scores (the FFN width comes from the scores or `intermediate_size`; with neither, only the options)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is unknown; allowed: {GRANULARITIES}")
    if granularity == "ffn":
        return
    if scores is not None and scores.neurons is None:
        raise ValueError("granularity='neuron' needs neuron scores: ft.importance(..., granularity='neuron')")
    width = scores.neurons.shape[1] if scores is not None else intermediate_size
    if isinstance(neuron_multiple, bool) or not isinstance(neuron_multiple, int) or neuron_multiple < 1:
        raise ValueError(f"neuron_multiple={neuron_multiple!r}; allowed: a positive integer (at most the FFN's width)")
    if width is not None and neuron_multiple > width:
        raise ValueError(f"neuron_multiple={neuron_multiple!r} does not fit the FFN's {width} neurons; allowed: an "
                         f"integer in [1, {width}]")


def normalized_head_scores(scores: Importance) -> torch.Tensor:
    """Head scores divided by the ℓ2 norm of their layer (a layer of zeros stays zero)."""
    return layer_normalized(scores.heads)


def layer_normalized(values: torch.Tensor) -> torch.Tensor:
    """[L, N] scores divided by the ℓ2 norm of their row (a row of zeros stays zero)."""
    norms = values.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, values / norms.clamp_min(1e-300), values)


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


def _is_integer(value) -> bool:
    """An integer of any kind (numpy's too, as a sweep over np.arange gives them); never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def _order(values: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Indices in pruning order; stable, so ties keep index order."""
    if kind == "random":
        return torch.randperm(values.numel(), generator=gen)
    return torch.sort(values, descending=(kind == "losing"), stable=True).indices
