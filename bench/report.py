"""The P1–P5 ratio table of the recorded results, per device, and one plot (PNG) per benchmark.

    python -m bench.report [--results bench/results] [--plots DIR] [--device SUBSTRING] [--no-plots]

Reads bench/results/*.json (one record per measurement; a rerun replaces a record with the same benchmark,
provider, config and device, so every device's records are its newest). Every ratio is taken between
providers of the same record set (measured side by side, interleaved, in one run). A missing provider
prints as "missing: reason".
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(results: Path = RESULTS) -> dict[str, list[dict]]:
    """{device: [records]}. Files holding one JSON object (gpu_check.json's summary, sm90_compile.json) are
    summaries, not measurement records: skipped."""
    by = defaultdict(list)
    for f in sorted(Path(results).glob("*.json")):
        records = json.loads(f.read_text())
        for r in records if isinstance(records, list) else ():
            by[r["device"]].append(r)
    return dict(by)


def _groups(recs, benchmark):
    """{config json (without nothing): {provider: record}} for one benchmark."""
    g = defaultdict(dict)
    for r in recs:
        if r["benchmark"] == benchmark:
            g[json.dumps(r["config"], sort_keys=True)][r["provider"]] = r
    return g


def _ms(rec):
    return None if rec is None else rec.get("median_ms")


def _ratio(p: dict, num: str, den: str):
    """median(num) / median(den) for two providers of one config, None when either is missing."""
    a, b = _ms(p.get(num)), _ms(p.get(den))
    return a / b if a and b else None


def _fmt(x, unit="×"):
    return "—" if x is None else f"{x:.2f}{unit}"


def _why(p: dict, *names) -> str:
    for n in names:
        r = p.get(n)
        if r is None:
            return f"{n}: not measured"
        if r.get("missing"):
            return f"{n} missing: {r['missing']}"
    return ""


def _load_note(recs) -> str:
    loads = [r["loadavg"][0] for r in recs if r.get("loadavg")]
    return "" if not loads else f"load average (1 min) while measuring: {min(loads):.2f}–{max(loads):.2f}"


def ratio_rows(recs: list[dict]) -> list[dict]:
    """P1–P5 rows: goal, config, measured ratio, pass/fail (None when not measurable)."""
    fused = "cpp" if recs[0]["device"].startswith("cpu") else "triton"
    return (_importance_rows(recs) + _attention_rows(recs, fused) + _rewind_rows(recs) + _search_rows(recs)
            + _search_workers_rows(recs) + _sharing_rows(recs))


def _importance_rows(recs):
    rows = []
    for cfg, p in _groups(recs, "importance").items():
        c = json.loads(cfg)
        name = f"{c.get('name')} {c.get('dtype')}"
        ft, plain, authors, loop = (_ms(p.get(n)) for n in ("fastticket", "sdpa_plain", "authors", "loop"))
        frozen = _ms(p.get("authors_frozen"))
        for goal, val, ok, who in (
            ("P1 importance / plain SDPA fwd+bwd ≤ 1.10", ft / plain if ft and plain else None, lambda v: v <= 1.10, ("fastticket", "sdpa_plain")),
            ("P1 authors' method / importance ≥ 3", authors / ft if ft and authors else None, lambda v: v >= 3, ("fastticket", "authors")),
            ("P1 authors' method, weights frozen / importance (info)", frozen / ft if ft and frozen else None, lambda v: v >= 3, ("fastticket", "authors_frozen")),
            (f"P1 per-example loop (B={c.get('B')}) / importance ≥ 20", loop / ft if ft and loop else None, lambda v: v >= 20, ("fastticket", "loop")),
        ) + ((("P1 torch.func vmap(grad) per-example / importance (info)", _ratio(p, "vmap_grad", "fastticket"),
                lambda v: v >= 1, ("fastticket", "vmap_grad")),) if "vmap_grad" in p else ()):
            rows.append({"goal": goal, "config": name, "ratio": val, "pass": None if val is None else ok(val),
                         "note": _why(p, *who) or f"{ft:.1f} ms vs {_ms(p.get(who[1])):.1f} ms"})
    return rows


def _attention_rows(recs, fused):
    rows, floors = [], {}
    for cfg, p in _groups(recs, "attention").items():
        if "byte_floor" in p:
            floors[cfg] = p["byte_floor"]["byte_floor_ms"]
    for cfg, p in _groups(recs, "attention").items():
        c = json.loads(cfg)
        if c.get("mode") != "fwd_bwd" or "sdpa" not in p:
            continue
        name = f"{c['shape']} B{c['B']} H{c['H']} T{c['T']} D{c['D']} {c['dtype']}"
        f, s = _ms(p.get(fused)), _ms(p.get("sdpa"))
        val = s / f if f and s else None
        rows.append({"goal": f"P2 attention fwd+bwd+dξ: SDPA+reduction / {fused} ≥ 1.0", "config": name, "ratio": val,
                     "pass": None if val is None else val >= 1.0,
                     "note": _why(p, fused, "sdpa") or f"{fused} {f:.2f} ms, sdpa {s:.2f} ms"})
        for vendor in ("sdpa_flash_dense", "sdpa_cudnn", "varlen_flash"):
            if vendor in p:
                val = _ratio(p, fused, vendor)
                rows.append({"goal": f"P2 {fused} / {vendor} + reduction ≤ 1.10", "config": name, "ratio": val,
                             "pass": None if val is None else val <= 1.10, "note": _why(p, fused, vendor) or ""})
        floor = floors.get(cfg)
        val = f / floor if f and floor else None
        rows.append({"goal": f"P2 {fused} / byte floor ≤ 2", "config": name, "ratio": val,
                     "pass": None if val is None else val <= 2.0,
                     "note": _why(p, fused) or (f"floor {floor:.3f} ms" if floor else "no byte floor recorded")})
    for cfg, p in _groups(recs, "attention").items():  # model families (#14): feature configs
        c = json.loads(cfg)
        if "feature" not in c:
            continue
        name = f"{c['shape']} B{c['B']} H{c['H']} T{c['T']} D{c['D']} {c['dtype']}"
        for peer in ("sdpa_mask", "flex"):
            val = _ratio(p, peer, fused)
            rows.append({"goal": f"#14 {c['feature']} attention fwd+bwd: {peer} / {fused} (info)", "config": name,
                         "ratio": val, "pass": None if val is None else val >= 1.0, "note": _why(p, fused, peer) or ""})
    return rows


def _rewind_rows(recs):
    rows = []
    for cfg, p in sorted(_groups(recs, "rewind").items(), key=lambda kv: (json.loads(kv[0])["name"], json.loads(kv[0])["level"])):
        c = json.loads(cfg)
        d, k = _ms(p.get("masked_dense")), _ms(p.get("compact"))
        speed = d / k if d and k else None
        val = speed / c["ideal_speedup"] if speed else None
        rows.append({"goal": f"P3 level {c['level']}: speed-up / ideal FLOP speed-up ≥ 0.9", "config": f"{c['name']} {c['dtype']}",
                     "ratio": val, "pass": None if val is None else val >= 0.9,
                     "note": _why(p, "masked_dense", "compact") or f"speed-up {speed:.2f}× of ideal {c['ideal_speedup']:.2f}×"})

    for cfg, p in sorted(_groups(recs, "rewind").items(), key=lambda kv: (json.loads(kv[0])["name"], json.loads(kv[0])["level"])):
        c = json.loads(cfg)
        val = _ratio(p, "compact_compiled", "compact")
        if val is not None or "compact_compiled" in p:
            rows.append({"goal": f"P3 level {c['level']}: torch.compile'd compact / compact (info)",
                         "config": f"{c['name']} {c['dtype']}", "ratio": val, "pass": None,
                         "note": _why(p, "compact", "compact_compiled") or ""})
    return rows


def _search_rows(recs):
    rows = []
    for cfg, p in _groups(recs, "search").items():
        c = json.loads(cfg)
        f, d = _ms(p.get("fastticket")), _ms(p.get("masked_dense"))
        val = f / d if f and d else None
        rows.append({"goal": "P4 8-level sweep: fastticket / masked-dense ≤ 0.55",
                     "config": f"{c.get('trials', '?')} trials, {c.get('train_examples', '?')} train ex, B{c.get('batch_size', '?')} T≤{c.get('max_length', '?')} {c.get('dtype')}",
                     "ratio": val, "pass": None if val is None else val <= 0.55,
                     "note": _why(p, "fastticket", "masked_dense") or f"{f / 1e3:.1f} s vs {d / 1e3:.1f} s"})
    return rows


def _search_workers_rows(recs):
    """P4 scaling (info): trials/hour of the sweep on k workers, and the speed-up over 1 worker."""
    rows = []
    for cfg, p in _groups(recs, "search_workers").items():
        c = json.loads(cfg)
        for k in sorted(int(n.split("_")[1]) for n in p if n != "workers_1"):
            ms = _ms(p.get(f"workers_{k}"))
            rate = f"{3600e3 * c['trials'] / ms:.0f} trials/h on {k} workers" if ms else ""
            one = _ms(p.get("workers_1"))
            rows.append({"goal": f"P4 scaling: sweep on 1 / on {k} workers (info)",
                         "config": f"{c['trials']} trials, {c['train_examples']} train ex, {c.get('dtype')}",
                         "ratio": _ratio(p, "workers_1", f"workers_{k}"), "pass": None,
                         "note": _why(p, "workers_1", f"workers_{k}")
                         or f"{rate} vs {3600e3 * c['trials'] / one:.0f} on 1"})
    return rows


def _sharing_rows(recs):
    rows = []
    sharing = _groups(recs, "sharing")
    for cfg, p in sharing.items():
        f, d = _ms(p.get("fastticket")), _ms(p.get("masked_dense"))
        val = d / f if f and d else None
        rows.append({"goal": "P5 sharing step: masked-dense / fastticket ≥ 1.3", "config": json.loads(cfg).get("model", "?"),
                     "ratio": val, "pass": None if val is None else val >= 1.3,
                     "note": _why(p, "fastticket", "masked_dense") or f"{f:.1f} ms vs {d:.1f} ms"
                     + (f" (compat mtdnn over the union: {_ms(p['mtdnn']):.1f} ms)" if _ms(p.get("mtdnn")) else "")})
    if not sharing:
        rows.append({"goal": "P5 sharing step: masked-dense / fastticket ≥ 1.3", "config": "—", "ratio": None,
                     "pass": None, "note": "missing: no sharing results recorded"})
    return rows


def table(device: str, recs: list[dict]) -> str:
    lines = [f"## {device}", "",
             f"torch {recs[0].get('torch')}, triton {recs[0].get('triton')}, commit {str(recs[0].get('commit'))[:10]}, "
             f"{_load_note(recs)}", "",
             "| goal | config | measured | pass | note |", "|---|---|---|---|---|"]
    for r in ratio_rows(recs):
        ok = "—" if r["pass"] is None else ("yes" if r["pass"] else "no")
        lines.append(f"| {r['goal']} | {r['config']} | {_fmt(r['ratio'])} | {ok} | {r['note']} |")
    return "\n".join(lines)


def plots(device: str, recs: list[dict], out: Path) -> list[Path]:
    """One PNG per benchmark: median ms (p20–p80 error bars) per provider and config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()
    written = []
    for bench in sorted({r["benchmark"] for r in recs}):
        groups = _groups(recs, bench)
        cfgs = [c for c, p in groups.items() if any(r.get("median_ms") for r in p.values())]
        if not cfgs:
            continue
        providers = sorted({n for c in cfgs for n, r in groups[c].items() if r.get("median_ms")})
        labels = [_label(json.loads(c)) for c in cfgs]
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cfgs) * max(1, len(providers)) / 3), 4.5))
        width = 0.8 / len(providers)
        for i, prov in enumerate(providers):
            xs, ys, lo, hi = [], [], [], []
            for j, c in enumerate(cfgs):
                r = groups[c].get(prov)
                if r and r.get("median_ms"):
                    xs.append(j + i * width)
                    ys.append(r["median_ms"])
                    lo.append(r["median_ms"] - r["p20_ms"])
                    hi.append(r["p80_ms"] - r["median_ms"])
            ax.bar(xs, ys, width, yerr=[lo, hi], label=prov, capsize=2)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cfgs))], labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("median ms (p20–p80)")
        ax.set_yscale("log")
        ax.set_title(f"{bench} — {device}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{slug}-{bench}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _label(c: dict) -> str:
    keys = ("shape", "name", "mode", "level", "trials")
    return " ".join(f"{c[k]}" if k != "level" else f"k={c[k]}" for k in keys if k in c) or "run"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--plots", default=None, help="plot directory (default: <results>/plots)")
    ap.add_argument("--device", default=None, help="only devices whose name contains this")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    data = load(Path(args.results))
    if not data:
        print(f"no results in {args.results}")
        return 1
    for device, recs in data.items():
        if args.device and args.device not in device:
            continue
        print(table(device, recs))
        print()
        if not args.no_plots:
            for p in plots(device, recs, Path(args.plots or Path(args.results) / "plots")):
                print(f"plot: {p}")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
