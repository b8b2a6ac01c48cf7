"""The trial list of a super-ticket search: pure data, no training, so trials can be fanned out.

Per seed: one `full` trial (fine-tune the whole model; it also yields the importance scores), then one
trial per level × kind (rewind the ticket and re-train it). A trial's id names it in the result store;
the FFN level shows in it only where it differs from the head level.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

PAPER_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
FFN_PAIRINGS = ("levels", "authors")


@dataclass(frozen=True)
class Trial:
    kind: str  # "full", "winning", "random" or "losing"
    level: float  # fraction of heads pruned; 0.0 for the full model
    seed: int
    ffn_level: float | None = None  # fraction of FFNs pruned; None: the same as `level`

    @property
    def ffn(self) -> float:
        return self.level if self.ffn_level is None else self.ffn_level

    @property
    def id(self) -> str:
        if self.kind == "full":
            return f"seed{self.seed}-full"
        name = f"seed{self.seed}-{self.kind}-{_percent(self.level)}"
        return name if _percent(self.ffn) == _percent(self.level) else f"{name}-ffn{_percent(self.ffn)}"


def _percent(level: float) -> str:
    percent = round(level * 1000) / 10  # to 0.1 %: 0.1 -> "10", 0.125 -> "12.5", 1/12 -> "08.3"
    return f"{int(percent):02d}" if percent.is_integer() else f"{percent:04.1f}"


SEED_RANGE = (-2**63, 2**63 - 1)  # what torch's generators take (a 64-bit integer)


def check_seed(seed, name: str = "seed") -> int:
    """The seed as an int; a ValueError naming it when torch could not seed a generator with it (found only
    once the first trial ran, after the run directory was written)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(f"{name}={seed!r}; allowed: an integer in [-2**63, 2**63 - 1]")
    return int(seed)


def plan_trials(levels, kinds, seeds, ffn_levels=None) -> list[Trial]:
    """Every trial of a search, in run order (each seed's full model first: its tickets depend on it).
    ffn_levels: one FFN level per level (None: the levels themselves)."""
    pairs = list(zip(levels, ffn_levels if ffn_levels is not None else levels))
    trials = []
    for seed in seeds:
        trials.append(Trial("full", 0.0, seed))
        trials += [Trial(kind, level, seed, float(ffn)) for level, ffn in pairs for kind in kinds]
    return trials


def check_ffn_levels(levels, ffn_levels) -> None:
    """One ValueError for ffn_levels that is not None, "levels", "authors" or one fraction in [0, 1) per level
    (what needs the model, "authors" on too few layers, resolve_ffn_levels checks)."""
    if ffn_levels is None or (isinstance(ffn_levels, str) and ffn_levels in FFN_PAIRINGS):
        return
    if isinstance(ffn_levels, str):
        raise ValueError(f"ffn_levels={ffn_levels!r}; allowed: None, {FFN_PAIRINGS} or one fraction in [0, 1) per level")
    values = tuple(ffn_levels)
    if len(values) != len(tuple(levels)):
        raise ValueError(f"ffn_levels has {len(values)} values but levels has {len(tuple(levels))}; allowed: one FFN level per level")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"ffn_levels value {v!r} is outside the allowed range [0, 1) (the fraction of FFNs pruned)")


def resolve_ffn_levels(levels, ffn_levels, num_layers: int) -> tuple[float, ...]:
    """The FFN level of each head level: None or "levels" (the same), "authors" (k FFNs pruned at level k/10,
    the pairing of the authors' BERT-base scripts: k / num_layers), or one fraction in [0, 1) per level."""
    check_ffn_levels(levels, ffn_levels)
    levels = tuple(float(l) for l in levels)
    if ffn_levels is None or ffn_levels == "levels":
        return levels
    if ffn_levels == "authors":
        counts = [math.floor(10 * l + 0.5 + 1e-9) for l in levels]
        for level, k in zip(levels, counts):
            if k >= num_layers:
                raise ValueError(f"ffn_levels='authors' prunes {k} FFNs at level {level}, but the model has {num_layers} "
                                 f"layers; allowed there: 'levels' or explicit fractions in [0, 1)")
        return tuple(k / num_layers for k in counts)
    return tuple(float(v) for v in ffn_levels)
