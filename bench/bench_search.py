"""P4 — a whole winning-ticket sweep (scaled down), both ways, interleaved, measured the same way:

- fastticket:    ft.search(model, task, levels=0.1…0.8, kinds=("winning",)): fine-tune the full model, score
                 importance (one fwd+bwd per batch), then per level select → ft.rewind (compact model) →
                 re-train with the same schedule → evaluate on the selection and held-out dev splits
- masked_dense:  the same schedule, serial, the authors' way: the same full fine-tuning and importance, then
                 per level a fresh full model trained and evaluated with the ticket's masks multiplied in
                 (ft.fine_tune(..., head_mask=ticket.head_mask(), ffn_mask=ticket.ffn_mask()))
Both sides: the embedded rotten_tomatoes (seeded subsets), 1 epoch, no early stopping, backend "auto",
CUDA under bf16 autocast (ft.fine_tune's default there). P4 target: fastticket ≤ 0.55 × masked_dense.

P4 scaling (test_search_workers): the same sweep over WORKER_SEEDS seeds (so several full trials can run at
once) by ft.search(..., out_dir, workers=k) for each k in WORKERS — k=1 is the plain single-process search,
k>1 a torch.distributed job on this machine (on CPU each worker gets cores // k threads, torchrun's rule; on
one GPU the k workers share it). The report turns the wall times into trials/hour.
Run:  pytest bench/bench_search.py   (FASTTICKET_BENCH_SMOKE=1: a tiny random model and task, 2 levels)
      pytest bench/bench_search.py -k workers    (the scaling part alone; `fastticket bench search` runs both)."""

import copy
import itertools
import os
import shutil
import tempfile

import pytest

import fastticket as ft
from _record import DEVICE, SMOKE, interleaved, record, scale
from fastticket.data.batching import seeded_subset
from fastticket.defaults import default_model_path

SWEEP = scale(
    smoke=dict(levels=(0.3, 0.5), train=8, eval=10, batch_size=4, max_length=32),
    cpu=dict(levels=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), train=48, eval=60, batch_size=16, max_length=64),
    gpu=dict(levels=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), train=2048, eval=500, batch_size=32, max_length=128),
)
ROUNDS = scale(1, 2, 3)
WORKERS = scale((1, 2), (1, 2), (1, 2, 4))  # 1 vs k workers (on one GPU: k workers share it)
WORKER_SEEDS = (0, 1)


def masked_sweep(pretrained, task, levels, train_n, eval_n, batch_size, seed=0):
    """ft.search's schedule, with masked dense models instead of compact ones (no result store)."""
    from fastticket.tickets.trial_runner import SELECTION_SEED, fresh_model, split_dev

    train = seeded_subset(task.train, train_n, seed=SELECTION_SEED)
    selection, heldout = split_dev(seeded_subset(task.dev, eval_n, seed=SELECTION_SEED), 0.1)
    schedule = dict(epochs=1, lr=5e-5, batch_size=batch_size, warmup=0.1, patience=None, dropout=task.dropout,
                    device=DEVICE, progress=False)
    pre = copy.deepcopy(pretrained).cpu().eval()
    net = fresh_model(pre, seed)
    ft.fine_tune(net, train, selection, metric=task, seed=seed, **schedule)
    scores = ft.importance(net, train, batch_size=batch_size, progress=False)
    rows = []
    for level in levels:
        ticket = ft.select(scores, level, kind="winning", seed=seed)
        net = fresh_model(pre, seed)
        hm, fm = ticket.head_mask(device=DEVICE), ticket.ffn_mask(device=DEVICE)
        ft.fine_tune(net, train, selection, metric=task, seed=seed, head_mask=hm, ffn_mask=fm, **schedule)
        rows.append((ft.evaluate(net, selection, metric=task, batch_size=2 * batch_size, device=DEVICE, head_mask=hm, ffn_mask=fm),
                     ft.evaluate(net, heldout, metric=task, batch_size=2 * batch_size, device=DEVICE, head_mask=hm, ffn_mask=fm)))
    return rows


def _smoke_setup():
    from _models import build, tiny_task

    model, _ = build("tiny")
    return model.cpu(), tiny_task(model.config.vocab_size)


def _real_setup(s):
    try:
        path = default_model_path()
    except ValueError as exc:  # the embedded model's package is not installed here: reported, not dropped
        reason = f"P4 needs the embedded all-MiniLM-L6-v2: {exc}"
        record("search", {}, {"model": "all-MiniLM-L6-v2", "levels": list(s["levels"])},
               {"fastticket": reason, "masked_dense": reason})
        pytest.skip(reason)
    return ft.load_model(path, num_labels=2), ft.load_task("rotten_tomatoes", tokenizer=path, max_length=s["max_length"])


def test_search_sweep(benchmark):
    s = SWEEP
    if SMOKE:  # a tiny random model and task: the smoke run checks the code path, not the numbers
        model, task = _smoke_setup()
    else:
        model, task = _real_setup(s)
    fns = {
        "fastticket": lambda: ft.search(model, task, levels=s["levels"], kinds=("winning",), seeds=(0,), epochs=1,
                                        batch_size=s["batch_size"], patience=None, max_train_examples=s["train"],
                                        max_eval_examples=s["eval"], importance_examples=s["train"], device=DEVICE,
                                        progress=False),
        "masked_dense": lambda: masked_sweep(model, task, s["levels"], s["train"], s["eval"], s["batch_size"]),
    }
    results = interleaved(benchmark, fns, rounds=ROUNDS, warmup=0)
    record("search", results, {"model": "all-MiniLM-L6-v2", "task": "rotten_tomatoes (embedded)",
                               "levels": list(s["levels"]), "kinds": ["winning"], "epochs": 1, "patience": None,
                               "train_examples": s["train"], "eval_examples": s["eval"], "batch_size": s["batch_size"],
                               "max_length": s["max_length"], "trials": 1 + len(s["levels"])})


def test_search_workers(benchmark):
    """P4 scaling: the sweep on 1 and k workers (see the module docstring). Equal results are tests/'s job: here
    each side keeps its own thread count, which may change the last bits on CPU."""
    s = SWEEP
    model, task = _smoke_setup() if SMOKE else _real_setup(s)
    root = tempfile.mkdtemp(prefix="bench-search-workers-")
    runs = itertools.count()
    rows = {}

    def sweep(k):
        out = os.path.join(root, f"run{next(runs)}")
        result = ft.search(model, task, levels=s["levels"], kinds=("winning",), seeds=WORKER_SEEDS, epochs=1,
                           batch_size=s["batch_size"], patience=None, max_train_examples=s["train"],
                           max_eval_examples=s["eval"], importance_examples=s["train"], progress=False, out_dir=out,
                           workers=k)
        rows[k] = [r["id"] for r in result.rows]
        shutil.rmtree(out)

    try:
        results = interleaved(benchmark, {f"workers_{k}": (lambda k=k: sweep(k)) for k in WORKERS}, rounds=ROUNDS, warmup=0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert len({tuple(r) for r in rows.values()}) == 1, f"the workers ran other trials: {rows}"
    trials = len(WORKER_SEEDS) * (1 + len(s["levels"]))
    record("search_workers", results, {"model": "all-MiniLM-L6-v2", "task": "rotten_tomatoes (embedded)",
                                       "levels": list(s["levels"]), "seeds": list(WORKER_SEEDS), "trials": trials,
                                       "train_examples": s["train"], "batch_size": s["batch_size"],
                                       "max_length": s["max_length"], "cpu_count": os.cpu_count()})
