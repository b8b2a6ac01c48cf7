"""The trial list of a super-ticket search: pure data, no training, so trials can be fanned out.

Per seed: one `full` trial (fine-tune the whole model; it also yields the importance scores), then one
trial per level × kind (rewind the ticket and re-train it). A trial's id names it in the result store.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class Trial:
    kind: str  # "full", "winning", "random" or "losing"
    level: float  # fraction pruned; 0.0 for the full model
    seed: int

    @property
    def id(self) -> str:
        if self.kind == "full":
            return f"seed{self.seed}-full"
        percent = round(self.level * 1000) / 10  # to 0.1 %: 0.1 -> "10", 0.125 -> "12.5"
        return f"seed{self.seed}-{self.kind}-" + (f"{int(percent):02d}" if percent.is_integer() else f"{percent:04.1f}")


def plan_trials(levels, kinds, seeds) -> list[Trial]:
    """Every trial of a search, in run order (each seed's full model first: its tickets depend on it)."""
    trials = []
    for seed in seeds:
        trials.append(Trial("full", 0.0, seed))
        trials += [Trial(kind, level, seed) for level in levels for kind in kinds]
    return trials
