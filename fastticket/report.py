"""Tables and phase-transition plots from search rows (results.json)."""

from __future__ import annotations

import io
import math
from collections import defaultdict

from .utils import atomic_write_bytes


def summarize(rows: list[dict]) -> list[dict]:
    """One line per (kind, level): mean/std of selection and held-out scores over seeds, kept structures,
    and a paired t-test of the held-out scores against the full model of the same seeds (scipy)."""
    from scipy import stats

    full = {r["seed"]: r for r in rows if r["kind"] == "full"}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["kind"], r["level"])].append(r)
    order = {"full": 0, "winning": 1, "random": 2, "losing": 3}
    lines = []
    for (kind, level), group in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        group = sorted(group, key=lambda r: r["seed"])
        heldout = [r["heldout_score"] for r in group]
        line = {
            "kind": kind, "level": level, "seeds": [r["seed"] for r in group],
            "selection_mean": _mean([r["selection_score"] for r in group]),
            "selection_std": _std([r["selection_score"] for r in group]),
            "heldout_mean": _mean(heldout), "heldout_std": _std(heldout),
            "weights_remaining": _mean([r["weights_remaining"] for r in group]),
            "heads_kept": _mean([r["heads_kept"] for r in group]), "ffn_kept": _mean([r["ffn_kept"] for r in group]),
            "p_value": None,
        }
        paired = [(r["heldout_score"], full[r["seed"]]["heldout_score"]) for r in group if r["seed"] in full]
        if kind != "full" and len(paired) >= 2:
            a, b = zip(*paired)
            if any(x != y for x, y in paired):
                line["p_value"] = float(stats.ttest_rel(a, b).pvalue)
        lines.append(line)
    return lines


def format_table(lines: list[dict], metric: str = "score") -> str:
    head = f"{'kind':8s} {'level':>5s} {'weights':>8s} {'heads':>6s} {'ffn':>4s}  {'selection ' + metric:>22s}  {'held-out ' + metric:>22s}  {'p vs full':>9s}"
    out = [head, "-" * len(head)]
    for l in lines:
        sel = _pm(l["selection_mean"], l["selection_std"])
        held = _pm(l["heldout_mean"], l["heldout_std"])
        p = "" if l["p_value"] is None else f"{l['p_value']:.3g}"
        out.append(f"{l['kind']:8s} {l['level']:5.2f} {l['weights_remaining']:7.1f}% {l['heads_kept']:6.1f} "
                   f"{l['ffn_kept']:4.1f}  {sel:>22s}  {held:>22s}  {p:>9s}")
    return "\n".join(out)


def plot_phase_transition(rows: list[dict], path: str, metric: str = "score", title: str | None = None) -> str:
    """Held-out score vs percent of encoder weights remaining: winning / random / losing, the full model
    as a line, ± std bands when there is more than one seed. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = summarize(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = {"winning": "tab:green", "random": "tab:blue", "losing": "tab:red"}
    for kind, color in colors.items():
        pts = sorted((l["weights_remaining"], l["heldout_mean"], l["heldout_std"]) for l in lines if l["kind"] == kind)
        if not pts:
            continue
        x, y, s = zip(*pts)
        ax.plot(x, y, "o-", color=color, label=f"{kind} tickets")
        if any(v > 0 for v in s):
            ax.fill_between(x, [a - b for a, b in zip(y, s)], [a + b for a, b in zip(y, s)], color=color, alpha=0.15)
    for l in lines:
        if l["kind"] == "full":
            ax.axhline(l["heldout_mean"], color="black", linestyle="--", label="full model")
            if l["heldout_std"] > 0:
                ax.axhspan(l["heldout_mean"] - l["heldout_std"], l["heldout_mean"] + l["heldout_std"], color="gray", alpha=0.12)
    ax.set_xlabel("encoder weights remaining (%)")
    ax.set_ylabel(f"held-out {metric}")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
    return path


def _mean(values):
    return sum(values) / len(values) if values else float("nan")


def _std(values):
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _pm(mean, std):
    return f"{mean:.4f} ± {std:.4f}" if std else f"{mean:.4f}"
