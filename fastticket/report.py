"""Statistics, super-ticket picks, tables and phase-transition plots from search rows (results.json).

Super tickets (docs/method.md §5, the paper's Tables 1, 5, 6): each seed picks, among its own winning rows,
the one with the best selection score (ties: the sparser ticket — higher head level, then higher FFN
level). The one super ticket a run exports is the (level, FFN level) most seeds picked (ties: the higher
mean selection score of those picks, then the sparser); its model is that of the seed whose pick scored
best on the selection split (ties: the lower seed).

Across seeds (the paper's Tables 1, 5, 6): mean and sample std (n - 1) of held-out scores, and a paired
t-test (scipy.stats.ttest_rel) of each group against the full model of the same seeds. The p-value is None
with fewer than two paired seeds or when the paired differences do not vary beyond float rounding
(the t statistic is undefined).
"Weights remaining" is the paper's: percent of all parameters of the classification model (embeddings,
pooler and task layer included); the encoder-only figure is reported beside it as "encoder".
"""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict

from .utils import atomic_write_bytes

KIND_ORDER = {"full": 0, "winning": 1, "random": 2, "losing": 3}


def _score(row: dict) -> float:
    value = row["selection_score"]
    return value if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def pick_key(row: dict) -> tuple:
    """Orders one seed's winning rows: better selection score, then sparser (head, then FFN level), then id."""
    return (_score(row), row["level"], row.get("ffn_level", row["level"]), row["id"])


def seed_super_tickets(rows) -> dict[int, dict]:
    """seed -> that seed's super ticket: its winning row with the best pick_key."""
    best: dict[int, dict] = {}
    for row in rows:
        if row["kind"] == "winning" and (row["seed"] not in best or pick_key(row) > pick_key(best[row["seed"]])):
            best[row["seed"]] = row
    return dict(sorted(best.items()))


def chosen_super_ticket(picks: dict[int, dict]) -> dict | None:
    """The one super ticket of a run (see the module docstring) among the per-seed picks."""
    if not picks:
        return None
    pair = lambda r: (r["level"], r.get("ffn_level", r["level"]))  # noqa: E731
    votes = Counter(pair(r) for r in picks.values())
    mean = {p: sum(_score(r) for r in picks.values() if pair(r) == p) / n for p, n in votes.items()}
    level = max(votes, key=lambda p: (votes[p], mean[p], p))
    return max((r for r in picks.values() if pair(r) == level), key=lambda r: (_score(r), -r["seed"]))


def paired_p_value(a, b) -> float | None:
    """Two-sided p-value of the paired t-test between equally long score lists (see the module docstring)."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired scores of different lengths ({len(a)} and {len(b)})")
    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2 or max(diffs) - min(diffs) <= 1e-12 * max(1.0, *map(abs, diffs)):
        return None  # (beyond float rounding) constant differences: the t statistic is undefined
    return float(stats.ttest_rel(a, b).pvalue)


def extra_scores(row: dict) -> dict:
    """{extra dev split: primary score} of a row (MNLI's dev_mismatched, ...)."""
    return dict(row.get("extra_scores") or {})


def _versus_full(group: list[dict], full: dict, score) -> dict:
    """mean/std of score(row) over the group, the full model's over the same seeds, and the paired p-value."""
    values = [score(r) for r in group]
    paired = [(score(r), score(full[r["seed"]])) for r in group if r["seed"] in full]
    out = {"mean": _mean(values), "std": _std(values), "p_value": None}
    if paired and group[0]["kind"] != "full":
        out["p_value"] = paired_p_value(*zip(*paired))
    return out


def summarize(rows: list[dict]) -> list[dict]:
    """One line per (kind, level, FFN level): mean/std over seeds of the selection and held-out scores and
    of every extra dev split, weights remaining (the paper's and the encoder's), kept structures, and the
    paired t-test of the held-out scores against the full model of the same seeds."""
    full = {r["seed"]: r for r in rows if r["kind"] == "full"}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["kind"], r["level"], r.get("ffn_level", r["level"]))].append(r)
    lines = []
    for (kind, level, ffn_level), group in sorted(groups.items(), key=lambda kv: (KIND_ORDER.get(kv[0][0], 9), kv[0][1:])):
        group = sorted(group, key=lambda r: r["seed"])
        held = _versus_full(group, full, lambda r: r["heldout_score"])
        splits = sorted({s for r in group for s in extra_scores(r)})
        lines.append({
            "kind": kind, "level": level, "ffn_level": ffn_level, "seeds": [r["seed"] for r in group],
            "selection_mean": _mean([r["selection_score"] for r in group]),
            "selection_std": _std([r["selection_score"] for r in group]),
            "heldout_mean": held["mean"], "heldout_std": held["std"], "p_value": held["p_value"],
            "extra": {s: _versus_full([r for r in group if s in extra_scores(r)], full, lambda r, s=s: extra_scores(r).get(s, math.nan))
                      for s in splits},
            "weights_remaining": _mean([r["weights_remaining"] for r in group]),
            "encoder_weights_remaining": _mean([r.get("encoder_weights_remaining", math.nan) for r in group]),
            "heads_kept": _mean([r["heads_kept"] for r in group]), "ffn_kept": _mean([r["ffn_kept"] for r in group]),
        })
    return lines


def super_ticket_entries(rows: list[dict]) -> list[dict]:
    """One entry per seed: its super ticket (the winning row with the best selection score among its levels)."""
    keys = ("seed", "id", "level", "ffn_level", "selection_score", "heldout_score", "weights_remaining",
            "encoder_weights_remaining", "extra_scores")
    return [{k: row.get(k) for k in keys} for row in seed_super_tickets(rows).values()]


def super_ticket_summary(rows: list[dict]) -> dict | None:
    """Mean/std over seeds of the per-seed super tickets' held-out scores and the full model's (same seeds),
    the paired t-test between them, the same for every extra dev split, and the weights remaining (Table 7);
    None before any winning row exists."""
    picks = seed_super_tickets(rows)
    if not picks:
        return None
    full = {r["seed"]: r for r in rows if r["kind"] == "full"}
    group = list(picks.values())
    seeds = [r["seed"] for r in group if r["seed"] in full]

    def stats(score) -> dict:
        return {"mean": _mean([score(r) for r in group]), "std": _std([score(r) for r in group]),
                "full_mean": _mean([score(full[s]) for s in seeds]), "full_std": _std([score(full[s]) for s in seeds]),
                "p_value": paired_p_value([score(picks[s]) for s in seeds], [score(full[s]) for s in seeds])}

    held = stats(lambda r: r["heldout_score"])
    splits = sorted({s for r in group for s in extra_scores(r)} & {s for r in full.values() for s in extra_scores(r)})
    chosen = chosen_super_ticket(picks)
    return {
        "seeds": [r["seed"] for r in group], "paired_seeds": seeds,
        "heldout_mean": held["mean"], "heldout_std": held["std"],
        "full_heldout_mean": held["full_mean"], "full_heldout_std": held["full_std"], "p_value": held["p_value"],
        "selection_mean": _mean([r["selection_score"] for r in group]),
        "weights_remaining_mean": _mean([r["weights_remaining"] for r in group]),
        "weights_remaining_std": _std([r["weights_remaining"] for r in group]),
        "extra": {s: stats(lambda r, s=s: extra_scores(r).get(s, math.nan)) for s in splits},
        "chosen": chosen["id"],
    }


def results_document(rows: list[dict]) -> dict:
    """What a search's results.json holds: the rows, the per-level summary, the per-seed super tickets and
    their summary against the full model, and the id of the one chosen super ticket."""
    chosen = chosen_super_ticket(seed_super_tickets(rows))
    return {"rows": rows, "summary": summarize(rows), "super_tickets": super_ticket_entries(rows),
            "super_ticket_summary": super_ticket_summary(rows), "super_ticket": None if chosen is None else chosen["id"]}


def format_table(lines: list[dict], metric: str = "score") -> str:
    splits = sorted({s for l in lines for s in l.get("extra", {})})
    head = (f"{'kind':8s} {'level':>5s} {'ffn':>5s} {'weights':>8s} {'encoder':>8s} {'heads':>6s} {'ffns':>5s}  "
            f"{'selection ' + metric:>22s}  {'held-out ' + metric:>22s}  {'p vs full':>9s}"
            + "".join(f"  {s:>22s}  {'p vs full':>9s}" for s in splits))
    out = [head, "-" * len(head)]
    for l in lines:
        p = "" if l["p_value"] is None else f"{l['p_value']:.3g}"
        text = (f"{l['kind']:8s} {l['level']:5.2f} {l.get('ffn_level', l['level']):5.2f} {l['weights_remaining']:7.1f}% "
                f"{l.get('encoder_weights_remaining', math.nan):7.1f}% {l['heads_kept']:6.1f} {l['ffn_kept']:5.1f}  "
                f"{_pm(l['selection_mean'], l['selection_std']):>22s}  {_pm(l['heldout_mean'], l['heldout_std']):>22s}  {p:>9s}")
        for s in splits:
            e = l["extra"].get(s)
            text += f"  {'' if e is None else _pm(e['mean'], e['std']):>22s}  {'' if not e or e['p_value'] is None else format(e['p_value'], '.3g'):>9s}"
        out.append(text)
    return "\n".join(out)


def format_super_tickets(entries: list[dict], summary: dict | None, metric: str = "score") -> str:
    """The per-seed super tickets and their summary against the full model (paired t-test over seeds)."""
    if not entries:
        return "no winning ticket has finished yet"
    out = [f"super tickets per seed (best selection {metric} among each seed's winning tickets):"]
    for e in entries:
        out.append(f"  seed {e['seed']:<4d} level {e['level']:.2f} (FFN {e['ffn_level']:.2f})  selection {e['selection_score']:.4f}  "
                   f"held-out {e['heldout_score']:.4f}  {e['weights_remaining']:.1f}% of weights")
    p = "n/a" if summary["p_value"] is None else f"{summary['p_value']:.3g}"
    out.append(f"super tickets: held-out {_pm(summary['heldout_mean'], summary['heldout_std'])} vs full model "
               f"{_pm(summary['full_heldout_mean'], summary['full_heldout_std'])}, paired t-test p = {p} "
               f"(seeds {summary['paired_seeds']}); weights remaining {_pm(summary['weights_remaining_mean'], summary['weights_remaining_std'], 1)}%")
    for split, e in summary["extra"].items():
        p = "n/a" if e["p_value"] is None else f"{e['p_value']:.3g}"
        out.append(f"  {split}: {_pm(e['mean'], e['std'])} vs full model {_pm(e['full_mean'], e['full_std'])}, p = {p}")
    return "\n".join(out)


def plot_phase_transition(rows: list[dict], path: str, metric: str = "score", title: str | None = None) -> str:
    """Held-out score vs percent of weights remaining (the paper's: of all parameters of the classification
    model, as Figure 4): winning / random / losing, the full model as a line, ± std bands when there is more
    than one seed. Written atomically as PNG."""
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
    ax.set_xlabel("percent of weights remaining (all parameters)")
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
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def _std(values):
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _pm(mean, std, digits: int = 4):
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"
