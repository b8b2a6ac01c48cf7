"""The `fastticket` command.

    fastticket search   the whole super-ticket search; with no arguments the embedded default (MiniLM +
                        rotten_tomatoes, offline, about 10 minutes on 2 CPU cores)
    fastticket plot     redraw a run's phase_transition.png
    fastticket export   write a run's super-ticket model as a compact or Hugging Face checkpoint
    fastticket ticket   score every head and FFN, cut one ticket and print it (no training)
    fastticket bench    run the benchmark suite (or named parts) of a source checkout, print the P1–P5 report
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .data import EMBEDDED_TASKS
from .defaults import DEFAULT_TASK
from .tickets import ESTIMATORS, KINDS

# The embedded default's budget (options not given on the command line): about 10 minutes on 2 CPU cores.
# all-MiniLM was trained with mean pooling, so its [CLS] classifier needs the paper's largest lr (2e-4) to
# learn in one short epoch.
QUICK_DEFAULTS = dict(epochs=1, lr=2e-4, batch_size=16, max_train_examples=2500, max_eval_examples=1000, max_length=64)
PAPER_DEFAULTS = dict(epochs=6, lr=5e-5, batch_size=32, max_train_examples=None, max_eval_examples=None, max_length=128)


def _levels(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--levels {text!r}: expected comma-separated fractions, e.g. 0.1,0.2,0.3") from None


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _search_parser(sub) -> None:
    p = sub.add_parser("search", help="fine-tune, score, prune at 8 levels, rewind, re-train, pick the super ticket")
    p.add_argument("--model", default=None, help="HF checkpoint dir or hub name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--task", default=None, help=f"task name (default: the embedded {DEFAULT_TASK}); GLUE names, snli, scitail, local")
    p.add_argument("--data-dir", default=None, help="local GLUE-layout directory (or the folder of a local task)")
    p.add_argument("--levels", type=_levels, default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8", help="fractions pruned")
    p.add_argument("--kinds", type=_kinds, default="winning", help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--seeds", type=_seeds, default="0")
    p.add_argument("--estimator", default="paper", choices=ESTIMATORS)
    p.add_argument("--epochs", type=int, default=None, help=f"default 6 (the paper's); 1 for {DEFAULT_TASK}")
    p.add_argument("--lr", type=float, default=None, help="default 5e-5; 2e-4 for the embedded default")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; 16 for the embedded default")
    p.add_argument("--patience", type=int, default=2, help="early-stopping patience in epochs (0 = none)")
    p.add_argument("--max-length", type=int, default=None, help="default 128; 64 for the embedded default")
    p.add_argument("--importance-examples", type=int, default=None, help="training examples scored (default all)")
    p.add_argument("--max-train-examples", type=int, default=None, help="default all; 2500 for the embedded default")
    p.add_argument("--max-eval-examples", type=int, default=None, help="default all; 1000 for the embedded default")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--backend", default="auto", help="fused-op backend: auto, torch, cpp, triton, cuda")
    p.add_argument("--out", default=None, help="run directory (default: runs/<task>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out, running only what is missing")
    p.set_defaults(run=_run_search)


def _run_search(args) -> int:
    import time as _time

    from .defaults import display_name
    from .tickets import search

    if args.resume and not args.out:
        raise ValueError("--resume needs --out: the run directory to continue")
    task = args.task or DEFAULT_TASK
    budget = QUICK_DEFAULTS if task == DEFAULT_TASK else PAPER_DEFAULTS
    options = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in budget.items()}
    out = args.out or os.path.join("runs", f"{task}-{_time.strftime('%Y%m%d-%H%M%S')}")
    model = args.model
    if model is None:
        from .defaults import default_model_path

        model = default_model_path()
    result = search(
        model, task, levels=args.levels, kinds=args.kinds, seeds=args.seeds, out_dir=out, estimator=args.estimator,
        patience=args.patience or None, data_dir=args.data_dir, importance_examples=args.importance_examples,
        device=args.device, backend=args.backend, resume=args.resume, **options,
    )
    print(f"\n{display_name(model)} on {task}: {result.config['train_examples']} training, "
          f"{result.config['selection_examples']} selection and {result.config['heldout_examples']} held-out examples")
    print(result.table())
    if result.super_row is not None:
        r = result.super_row
        print(f"\nsuper ticket: level {r['level']:.2f} (seed {r['seed']}), selection {result.config['metric']} "
              f"{r['selection_score']:.4f}, held-out {r['heldout_score']:.4f}, {r['weights_remaining']:.1f}% of encoder weights")
        print(format_ticket(result.super_ticket))
    print(f"\nwrote {out}/results.json, super_ticket.json, phase_transition.png, super_ticket_model/")
    return 0


def _plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="redraw DIR/phase_transition.png from DIR/results.json")
    p.add_argument("run_dir")
    p.set_defaults(run=_run_plot)


def _run_plot(args) -> int:
    from .defaults import display_name
    from .report import plot_phase_transition

    config, rows = _read_run(args.run_dir)
    title = f"{display_name(config.get('model_name'))} on {config.get('task')}"
    path = plot_phase_transition(rows, os.path.join(args.run_dir, "phase_transition.png"), config.get("metric", "score"), title)
    print(f"wrote {path}")
    return 0


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="write RUN_DIR's super-ticket model as a compact or Hugging Face checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--format", default="hf", choices=("compact", "hf"))
    p.add_argument("--out", default=None, help="target directory (default: RUN_DIR/export-<format>)")
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from .models import export, load_pruned
    from .tickets.search import SUPER_MODEL_DIR

    _read_run(args.run_dir)
    source = os.path.join(args.run_dir, SUPER_MODEL_DIR)
    if not os.path.isdir(source):
        raise ValueError(f"{args.run_dir!r} has no {SUPER_MODEL_DIR}/ yet: no winning ticket has finished training")
    out = args.out or os.path.join(args.run_dir, f"export-{args.format}")
    export(load_pruned(source), out, format=args.format)
    print(f"wrote {out} ({args.format})")
    return 0


def _read_run(run_dir: str):
    import json

    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
            rows = json.load(f)["rows"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{run_dir!r} is not a fastticket search run directory ({exc})") from None
    return config, rows


def _ticket_parser(sub) -> None:
    p = sub.add_parser("ticket", help="importance + select on a model and task; prints the ticket")
    p.add_argument("--model", default=None, help="HF checkpoint dir or hub name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--task", default=DEFAULT_TASK, choices=sorted(EMBEDDED_TASKS))
    p.add_argument("--estimator", default="paper", choices=ESTIMATORS)
    p.add_argument("--sparsity", type=float, default=0.3, help="fraction of heads and FFNs pruned, in (0, 1)")
    p.add_argument("--kind", default="winning", choices=KINDS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-examples", type=int, default=1024, help="training examples scored (0 = all)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="directory for importance.json and ticket.json")
    p.set_defaults(run=_run_ticket)


def _run_ticket(args) -> int:
    import torch

    from . import importance, load_model, load_task, select
    from .data.batching import seeded_subset
    from .defaults import default_model_path
    from .tickets.select import check_level

    check_level(args.sparsity, args.kind)
    if args.max_examples < 0:
        raise ValueError(f"--max-examples={args.max_examples}; allowed: 0 (all) or a positive count")
    torch.manual_seed(args.seed)
    source = args.model or default_model_path()
    model = load_model(source, num_labels=2, seed=args.seed).to(args.device)
    task = load_task(args.task, tokenizer=source, max_length=args.max_length)
    data = task.train
    if args.max_examples:
        data = seeded_subset(data, args.max_examples, seed=args.seed)
    start = time.perf_counter()
    scores = importance(model, data, estimator=args.estimator, batch_size=args.batch_size, backend=args.backend)
    seconds = time.perf_counter() - start
    ticket = select(scores, args.sparsity, kind=args.kind, seed=args.seed)
    name = args.model or "all-MiniLM-L6-v2 (embedded)"
    print(f"\n{name} on {task.name}: {scores.num_examples} examples, "
          f"estimator {scores.estimator}, {seconds:.1f} s")
    print(format_scores(scores))
    print(f"\n{args.kind} ticket at sparsity {args.sparsity}:")
    print(format_ticket(ticket))
    if args.out:
        scores.save(os.path.join(args.out, "importance.json"))
        ticket.save(os.path.join(args.out, "ticket.json"))
        print(f"\nwrote {args.out}/importance.json and {args.out}/ticket.json")
    return 0


def format_scores(scores) -> str:
    """Head scores normalized per layer (as selection ranks them) and raw FFN scores, one row a layer."""
    from .tickets.select import normalized_head_scores

    heads = normalized_head_scores(scores)
    lines = ["layer  " + " ".join(f"h{h:<4d}" for h in range(heads.shape[1])) + "  ffn (raw)"]
    for l in range(heads.shape[0]):
        lines.append(f"{l:5d}  " + " ".join(f"{v:.3f}" for v in heads[l].tolist()) + f"  {scores.ffn[l].item():.3e}")
    return "\n".join(lines)


def format_ticket(ticket) -> str:
    lines = ["layer  heads (# kept, . pruned)  ffn"]
    for l in range(ticket.num_layers):
        row = "".join("#" if k else "." for k in ticket.heads[l].tolist())
        lines.append(f"{l:5d}  {row:<24s} {'kept' if ticket.ffn[l] else 'pruned'}")
    lines.append(f"heads kept {int(ticket.heads.sum())}/{ticket.heads.numel()}, "
                 f"FFNs kept {int(ticket.ffn.sum())}/{ticket.ffn.numel()}")
    return "\n".join(lines)


BENCH_PARTS = ("attention", "residual_layernorm", "head_projection", "importance", "rewind", "search", "sharing")


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="run bench/ (pytest-benchmark, results in bench/results) and print the P1-P5 report")
    p.add_argument("parts", nargs="*", metavar="PART",
                   help=f"benchmarks to run (default: all): {', '.join(BENCH_PARTS)}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round, nothing recorded (FASTTICKET_BENCH_SMOKE=1)")
    p.add_argument("--report-only", action="store_true", help="print the report of the recorded results, run nothing")
    p.add_argument("--results", default=None, help="results directory (default: bench/results)")
    p.add_argument("--no-plots", action="store_true", help="print the table only")
    p.set_defaults(run=_run_bench)


def _run_bench(args) -> int:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bench = root / "bench"
    unknown = [p for p in args.parts if p not in BENCH_PARTS]
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(map(repr, unknown))}; allowed: {', '.join(BENCH_PARTS)}")
    if not (bench / "report.py").exists():
        raise ValueError(f"no benchmark suite at {bench}: `fastticket bench` runs from a source checkout")
    env = dict(os.environ)
    if args.results:
        env["FASTTICKET_BENCH_RESULTS"] = os.path.abspath(args.results)
    if args.smoke:
        env["FASTTICKET_BENCH_SMOKE"] = "1"
    if not args.report_only:
        files = [str(bench / f"bench_{p}.py") for p in (args.parts or BENCH_PARTS)]
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *files]
        if args.smoke:
            cmd.insert(-len(files), "--benchmark-disable")
        code = subprocess.call(cmd, cwd=root, env=env)
        if code != 0:
            print(f"fastticket bench: pytest exited with {code}", file=sys.stderr)
            return code
        if args.smoke:
            return 0
    report = [sys.executable, "-m", "bench.report"] + (["--results", env["FASTTICKET_BENCH_RESULTS"]] if args.results else [])
    return subprocess.call(report + (["--no-plots"] if args.no_plots else []), cwd=root, env=env)


def _share_parser(sub) -> None:
    p = sub.add_parser("share", help="ticket sharing: multi-task training, each task on its own ticket of a shared encoder")
    p.add_argument("--tasks", type=_kinds, default="rotten_tomatoes,bbc_news", help="comma-separated task names")
    p.add_argument("--tickets-from", default=None,
                   help="comma-separated run dirs holding the tickets: `fastticket search` runs (config.json task + "
                        "super_ticket.json), a share run (tickets/<task>.json) or a dir of <task>.json / <task>/super_ticket.json")
    p.add_argument("--sparsity", type=float, default=None,
                   help="without --tickets-from: cut a winning ticket per task at this level from importance on the "
                        "pre-trained model (as `fastticket ticket` does)")
    p.add_argument("--importance-examples", type=int, default=256, help="examples scored per task for --sparsity")
    p.add_argument("--model", default=None, help="HF checkpoint dir or hub name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--data-dir", default=None, help="GLUE-layout root for GLUE tasks")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--max-train-examples", type=int, default=1500, help="per task, seeded subset (0 = all)")
    p.add_argument("--max-eval-examples", type=int, default=500, help="per task, seeded subset (0 = all)")
    p.add_argument("--compat", default=None, choices=("mtdnn",), help="the authors' masking by multiplication + dense Adamax")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--backend", default="auto")
    p.add_argument("--out", default=None, help="run directory (default: runs/share-<time>)")
    p.set_defaults(run=_run_share)


def _read_tickets(sources: str, names) -> dict:
    import json

    from .tickets import Ticket

    found = {}
    for src in [s for s in sources.split(",") if s.strip()]:
        if not os.path.isdir(src):
            raise ValueError(f"--tickets-from {src!r} is not a directory")
        config = os.path.join(src, "config.json")
        if os.path.isfile(os.path.join(src, "super_ticket.json")) and os.path.isfile(config):
            with open(config, encoding="utf-8") as f:
                found[json.load(f).get("task")] = Ticket.load(os.path.join(src, "super_ticket.json"))
        for name in names:
            for candidate in (os.path.join(src, "tickets", f"{name}.json"), os.path.join(src, f"{name}.json"),
                              os.path.join(src, name, "super_ticket.json")):
                if name not in found and os.path.isfile(candidate):
                    found[name] = Ticket.load(candidate)
    return {n: found[n] for n in names if n in found}


def _subsets(task, args):
    from .data.batching import seeded_subset

    if args.max_train_examples:
        task.train = seeded_subset(task.train, args.max_train_examples, seed=args.seed)
    if args.max_eval_examples:
        task.dev = seeded_subset(task.dev, args.max_eval_examples, seed=args.seed)
    return task


def _run_share(args) -> int:
    import torch

    from . import importance, load_model, load_task, select, share_tickets
    from .data.batching import seeded_subset
    from .defaults import default_model_path
    from .tickets.adapt import with_task_head

    if not args.tasks:
        raise ValueError("--tasks is empty; give comma-separated task names, e.g. rotten_tomatoes,bbc_news")
    if args.tickets_from is None and args.sparsity is None:
        raise ValueError("give --tickets-from RUN_DIR (super tickets of `fastticket search` runs) or --sparsity S")
    source = args.model or default_model_path()
    tasks = {n: _subsets(load_task(n, tokenizer=source, max_length=args.max_length, data_dir=args.data_dir), args)
             for n in args.tasks}
    model = load_model(source, seed=args.seed, backend=args.backend)
    if args.tickets_from is not None:
        tickets = _read_tickets(args.tickets_from, list(tasks))
    else:
        from .tickets.select import check_level

        check_level(args.sparsity)
        torch.manual_seed(args.seed)
        tickets = {}
        for n, t in tasks.items():
            scores = importance(with_task_head(model, t.num_labels, args.seed),
                                seeded_subset(t.train, args.importance_examples, seed=args.seed), backend=args.backend)
            tickets[n] = select(scores, args.sparsity, seed=args.seed)
    out = args.out or os.path.join("runs", f"share-{time.strftime('%Y%m%d-%H%M%S')}")
    result = share_tickets(model, tasks, tickets, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           weight_decay=args.weight_decay, seed=args.seed, compat=args.compat, device=args.device,
                           backend=args.backend, out_dir=out)
    print(f"\nticket sharing over {', '.join(tasks)} ({result.config['steps']} steps, {result.config['seconds']:.0f} s, "
          f"union: {result.config['union']['heads']} heads, {result.config['union']['ffn']} FFNs)")
    print(result.table())
    print(f"\nwrote {out}/results.json, tickets/, shared_encoder/, task_heads.safetensors")
    return 0


def _adapt_parser(sub) -> None:
    p = sub.add_parser("adapt", help="domain adaptation: fine-tune a super ticket / shared model on 0.1-100%% of a task")
    p.add_argument("--task", default="bbc_news")
    p.add_argument("--from", dest="source", default=None,
                   help="a `fastticket search` run (its super_ticket_model/), a `fastticket share` run, a compact export "
                        "or a checkpoint dir (default: the embedded pre-trained model)")
    p.add_argument("--shared-task", default=None, help="with a share run: adapt that task's ticket (default: the union)")
    p.add_argument("--fractions", type=_levels, default="0.001,0.01,0.1,1.0")
    p.add_argument("--seeds", type=_seeds, default="0")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--max-train-examples", type=int, default=0, help="seeded subset before the fractions (0 = all)")
    p.add_argument("--max-eval-examples", type=int, default=500, help="seeded dev subset (0 = all)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="run directory (default: runs/adapt-<task>-<time>)")
    p.set_defaults(run=_run_adapt)


def _run_adapt(args) -> int:
    from . import adapt, load_task
    from .defaults import default_model_path
    from .tickets.adapt import _encoder_of
    from .tickets.search import SUPER_MODEL_DIR

    source = args.source or default_model_path()
    if os.path.isdir(os.path.join(source, SUPER_MODEL_DIR)):
        source = os.path.join(source, SUPER_MODEL_DIR)
    if not os.path.exists(source):
        raise ValueError(f"--from {source!r} does not exist")
    encoder = _encoder_of(source, args.shared_task)
    args.seed = args.seeds[0] if args.seeds else 0
    task = _subsets(load_task(args.task, tokenizer=encoder.name_or_path or default_model_path(),
                              max_length=args.max_length, data_dir=args.data_dir), args)
    out = args.out or os.path.join("runs", f"adapt-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    result = adapt(encoder, task, args.fractions, seeds=args.seeds, epochs=args.epochs, lr=args.lr,
                   batch_size=args.batch_size, device=args.device, out_dir=out)
    print(f"\nadapting {result.config['heads_kept']} heads / {result.config['ffn_kept']} FFNs to {args.task} "
          f"({len(task.train)} training, {len(task.dev)} dev examples)")
    print(result.table())
    print(f"\nwrote {out}/results.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastticket", description="Super tickets in pre-trained encoders, fast.")
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _plot_parser(sub)
    _export_parser(sub)
    _ticket_parser(sub)
    _share_parser(sub)
    _adapt_parser(sub)
    _bench_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as exc:
        print(f"fastticket {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
