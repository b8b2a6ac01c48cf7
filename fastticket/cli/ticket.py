"""fastticket ticket: score every head and FFN of a *fine-tuned* model and cut one ticket.

Importance is only meaningful at the end of fine-tuning (the paper, §3): the scores come from
  --from RUN          a `fastticket search` run: the scores its seed's fine-tuned full model left
                      (importance-seed<s>.json), no training at all;
  --checkpoint DIR    a fine-tuned checkpoint: a Hugging Face directory whose classifier has the task's
                      label count (a checkpoint without one is refused), or a compact ft.export;
  otherwise           --model (pre-trained; default the embedded MiniLM) fine-tuned on the task first
                      (the training preset: quick for the embedded tasks, paper otherwise).
An untrained task head is never scored. The label count always comes from the task.
"""

from __future__ import annotations

import os
import time
import warnings

from ..data import EMBEDDED_TASKS
from ..defaults import DEFAULT_TASK
from ..tickets import ESTIMATORS, KINDS
from .common import format_scores, format_ticket
from .training import add_train_options, train_config


def add_parser(sub) -> None:
    p = sub.add_parser("ticket", help="fine-tune (or take a run / fine-tuned checkpoint), score importance, cut one ticket")
    p.add_argument("--model", default=None, help="pre-trained HF checkpoint dir or hub name, fine-tuned on the task first "
                                                 "(default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--from", dest="run_dir", default=None, help="a `fastticket search` run: cut from its saved scores")
    p.add_argument("--checkpoint", default=None, help="a fine-tuned checkpoint (HF dir with the task's classifier, or a "
                                                      "compact export): scored as it is")
    p.add_argument("--task", default=None, help=f"task name (default: the run's, else {DEFAULT_TASK}); GLUE names, snli, scitail")
    p.add_argument("--data-dir", default=None, help="local GLUE-layout directory for GLUE/SNLI/SciTail tasks")
    p.add_argument("--estimator", default="paper", choices=ESTIMATORS)
    p.add_argument("--sparsity", type=float, default=0.3, help="fraction of heads (and FFNs) pruned, in (0, 1)")
    p.add_argument("--ffn-sparsity", type=float, default=None, help="fraction of FFNs pruned, in [0, 1) (default: --sparsity)")
    p.add_argument("--kind", default="winning", choices=KINDS)
    p.add_argument("--seed", type=int, default=0, help="fine-tuning / random-ticket seed (with --from: the run's seed)")
    p.add_argument("--max-examples", type=int, default=1024, help="training examples scored (0 = all)")
    add_train_options(p, "quick for the embedded tasks, paper otherwise")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="a new or empty directory for importance.json and ticket.json")
    p.set_defaults(run=run)


def run(args) -> int:
    check_args(args)
    start = time.perf_counter()
    if args.run_dir is not None:
        scores, source = scores_of_run(args)
    else:
        scores, source = scores_of_model(args)
    from .. import select

    ticket = select(scores, args.sparsity, kind=args.kind, seed=args.seed, ffn_sparsity=args.ffn_sparsity)
    print(f"\n{source}: {scores.num_examples} examples scored, estimator {scores.estimator}, "
          f"{time.perf_counter() - start:.1f} s")
    print(format_scores(scores))
    print(f"\n{args.kind} ticket at sparsity {args.sparsity}:")
    print(format_ticket(ticket))
    if args.out is not None:
        from ..rundir import claim

        claim(args.out, "ticket")  # checked before any work; the marker makes the directory ours
        scores.save(os.path.join(args.out, "importance.json"))
        ticket.save(os.path.join(args.out, "ticket.json"))
        print(f"\nwrote {args.out}/importance.json and {args.out}/ticket.json")
    return 0


def check_args(args) -> None:
    """One ValueError for the first bad option, before any loading or fine-tuning: levels, counts, the one
    model source, the device, the backend and --out (a new or empty directory, never the user's files)."""
    from ..ops import check_backend_name
    from ..rundir import check_target
    from ..tickets.select import check_ffn_level, check_level
    from ..utils import resolve_device

    check_level(args.sparsity, args.kind)
    check_ffn_level(args.ffn_sparsity)
    if args.max_examples < 0:
        raise ValueError(f"--max-examples={args.max_examples}; allowed: 0 (all) or a positive count")
    if sum(x is not None for x in (args.run_dir, args.checkpoint, args.model)) > 1:
        raise ValueError("give one of --from RUN, --checkpoint DIR and --model DIR (the model to fine-tune first)")
    resolve_device(args.device)
    check_backend_name(args.backend, "--backend")
    for flag, path in (("--checkpoint", args.checkpoint), ("--model", args.model)):
        if path is not None and os.path.isdir(os.path.expanduser(path)):
            check_checkpoint_dir(flag, os.path.expanduser(path))
    if args.out is not None:
        if not args.out.strip():
            raise ValueError("--out ''; allowed: a directory path for importance.json and ticket.json (or no --out)")
        check_target(args.out, "ticket")


def check_checkpoint_dir(flag: str, path: str) -> None:
    """An hf-compact or ONNX export is not a model fastticket scores or fine-tunes (loading its tokenizer
    would even ask on stdin to run the export's code): refused by name, before the task is loaded."""
    from ..models.exporting import CONFIG_FILE
    from ..models.hf_compact import is_hf_compact

    allowed = "a compact export (fastticket export --format compact) or a Hugging Face checkpoint"
    if flag == "--model":
        allowed = "a pre-trained Hugging Face checkpoint"
    if is_hf_compact(path):
        raise ValueError(f"{flag} {path!r} is an hf-compact export (for transformers alone); allowed: {allowed}")
    configs = (CONFIG_FILE, "config.json") if flag == "--checkpoint" else ("config.json",)
    if not any(os.path.isfile(os.path.join(path, f)) for f in configs):
        raise ValueError(f"{flag} {path!r} has no {' or '.join(configs)}; allowed: {allowed}")


def scores_of_run(args):
    """The saved scores of a search run's fine-tuned full model for --seed."""
    from ..tickets import Importance
    from .common import read_run

    config, _ = read_run(args.run_dir)
    if args.task is not None and args.task != config.get("task"):
        raise ValueError(f"--task {args.task!r} but run {args.run_dir!r} searched task {config.get('task')!r}")
    path = os.path.join(args.run_dir, f"importance-seed{args.seed}.json")
    if not os.path.isfile(path):
        raise ValueError(f"run {args.run_dir!r} has no scores for seed {args.seed} ({path}); its seeds: {config.get('seeds')}")
    return Importance.load(path), f"run {args.run_dir} (task {config.get('task')}, seed {args.seed}, fine-tuned)"


def scores_of_model(args):
    """Scores of a fine-tuned checkpoint, or of --model after fine-tuning it on the task."""
    import torch

    from .. import fine_tune, importance, load_task
    from ..data.batching import seeded_subset
    from ..defaults import default_model_path

    task_name = args.task or DEFAULT_TASK
    preset = "quick" if task_name in EMBEDDED_TASKS else "paper"
    config = train_config(args, preset)
    source = args.checkpoint or args.model or default_model_path()
    if source.startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(source)):
        flag = "--checkpoint" if args.checkpoint else "--model"
        raise ValueError(f"{flag} {source!r} is not a directory; allowed: a checkpoint directory or a hub name")
    task = load_task(task_name, tokenizer=source, max_length=config.max_length, data_dir=args.data_dir)
    if args.checkpoint is not None:
        model = fine_tuned_checkpoint(args.checkpoint, task.num_labels)
        what = f"fine-tuned checkpoint {args.checkpoint} on {task.name}"
    else:
        from .. import load_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pre-trained checkpoint has no classifier: a fresh one is trained next
            model = load_model(source, num_labels=task.num_labels, seed=args.seed)
        train = seeded_subset(task.train, config.max_train_examples, seed=args.seed)
        dev = seeded_subset(task.dev, config.max_eval_examples, seed=args.seed)
        trial = config if config.dropout is not None else config.replace(dropout=task.dropout)
        result = fine_tune(model, train, dev, config=trial, metric=task, seed=args.seed, device=args.device)
        what = (f"{args.model or 'all-MiniLM-L6-v2 (embedded)'} fine-tuned on {task.name} ({len(train)} examples, "
                f"{result.steps} steps, dev {result.metric} {result.best_metric:.4f})")
    torch.manual_seed(args.seed)
    data = seeded_subset(task.train, args.max_examples or None, seed=args.seed)
    scores = importance(model.to(args.device), data, estimator=args.estimator, batch_size=config.batch_size,
                        backend=args.backend, progress=False)
    return scores, what


def fine_tuned_checkpoint(path: str, num_labels: int):
    """A compact export as it is, or an HF checkpoint whose classifier for `num_labels` it holds itself
    (a task head initialized here would depend on the seed: two loads with two seeds tell)."""
    import torch

    from .. import load_model, load_pruned
    from ..models.exporting import CONFIG_FILE

    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        model = load_pruned(path)
        if model.config.num_labels != num_labels:
            raise ValueError(f"--checkpoint {path!r} has {model.config.num_labels} labels; the task has {num_labels}")
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, other = load_model(path, num_labels=num_labels, seed=0), load_model(path, num_labels=num_labels, seed=1)
    if not torch.equal(model.head.out.weight, other.head.out.weight):
        raise ValueError(f"--checkpoint {path!r} has no trained classifier with {num_labels} labels; pass it as "
                         f"--model to fine-tune it on the task first")
    return model
