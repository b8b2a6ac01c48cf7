"""ft.search: the paper's whole procedure (docs/method.md), automated and resumable.

Per seed: fine-tune the full model → score importance on the training set → cut a ticket per level ×
kind → rewind each into a physically compact model at pre-trained values (task head re-initialized with
the fine-tuning seed) → train it with the same schedule → evaluate on the selection split (a fixed,
seeded 10 % of dev), on the held-out 90 % and on every extra dev split (MNLI-mismatched). Each seed's
super ticket is its winning ticket with the best selection score; results.json reports them and their
mean ± std against the full model with a paired t-test over seeds (report.py). The one exported super
ticket (out_dir/super_ticket_model, read by ft.load_pruned and `fastticket export`) follows the rule in
report.py: the level most seeds picked. The trial list (trials.py), the trial loop (trial_runner.py), the
kept models (kept_models.py) and the result store (store.py) stay apart, so trials fan out over
torch.distributed workers (sweep.py): under torchrun every worker calls search() and takes its share.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from dataclasses import dataclass, field

import torch

from ..data.metrics import primary_metric
from ..data.task import Task, check_task_fits, check_task_name, load_task
from ..distributed import Workers, check_nproc, in_torchrun, records_failures, stop_on_sigterm
from ..rundir import check_target, code_version, fingerprint_dataset, model_identity, releases_run_locks
from ..utils import resolve_device
from ..defaults import display_name
from ..models import TicketModel, load_model
from ..ops.dispatch import check_backend_name
from ..train import TrainConfig, as_config
from .importance import ESTIMATORS, Importance
from .kept_models import SUPER_MODEL_DIR
from .select import KINDS, check_granularity, check_level, select
from .store import ResultStore
from .sweep import search_on_workers, start_store
from .ticket import Ticket
from .trial_runner import SELECTION_SEED, Runner, SearchData, split_dev
from .trials import PAPER_LEVELS, Trial, check_ffn_levels, check_seed, plan_trials, resolve_ffn_levels

__all__ = ["search", "SearchResult", "split_dev", "SELECTION_SEED", "SUPER_MODEL_DIR", "PAPER_LEVELS"]

_SEARCHES = itertools.count()  # the n-th search() of each worker of a job is the same search (its store scope)


@dataclass
class SearchResult:
    """rows: one per finished trial; super_row / super_ticket: the one chosen super ticket (report.py's
    rule); super_tickets(): one per seed; super_ticket_summary(): their statistics against the full model."""

    rows: list[dict]
    config: dict
    super_ticket: Ticket | None = None
    super_row: dict | None = None
    out_dir: str | None = None
    tickets: dict = field(default_factory=dict, repr=False)  # trial id -> Ticket

    def summary(self) -> list[dict]:
        from ..report import summarize

        return summarize(self.rows)

    def super_tickets(self) -> list[dict]:
        from ..report import super_ticket_entries

        return super_ticket_entries(self.rows)

    def super_ticket_summary(self) -> dict | None:
        from ..report import super_ticket_summary

        return super_ticket_summary(self.rows)

    def table(self) -> str:
        from ..report import format_super_tickets, format_table

        metric = self.config.get("metric", "score")
        return (format_table(self.summary(), metric) + "\n\n"
                + format_super_tickets(self.super_tickets(), self.super_ticket_summary(), metric))

    def to_json(self) -> str:
        from ..report import results_document

        return json.dumps({"config": self.config, **results_document(self.rows), "super_row": self.super_row},
                          indent=1, sort_keys=True)

    def plot(self, path: str | None = None) -> str:
        """Draws phase_transition.png (into out_dir unless a path is given); returns its path."""
        from ..report import plot_phase_transition

        if path is None:
            if self.out_dir is None:
                raise ValueError("plot() needs a path when the search had no out_dir")
            path = os.path.join(self.out_dir, "phase_transition.png")
        title = f"{display_name(self.config.get('model_name'))} on {self.config.get('task')}"
        return plot_phase_transition(self.rows, path, self.config.get("metric", "score"), title)


@records_failures  # in a worker of a job: the launcher (or torchrun) reports this worker's error
@releases_run_locks  # the run lock store.start takes is released when search returns or raises
def search(
    model,
    task,
    levels=PAPER_LEVELS,
    kinds=("winning",),
    seeds=(0,),
    out_dir: str | None = None,
    *,
    config: TrainConfig | str | None = None,
    ffn_levels=None,
    estimator: str = "paper",
    importance_examples: int | None = None,
    selection_fraction: float = 0.1,
    data_dir: str | None = None,
    device=None,
    backend: str = "auto",
    resume: bool = False,
    progress: bool = True,
    granularity: str = "ffn",
    neuron_multiple: int = 64,
    workers: int | None = None,
    **train_options,
) -> SearchResult:
    """Runs (or resumes) a super-ticket search; see the module docstring. `model`: a checkpoint dir, hub
    name, HF model or TicketModel (its current weights are the pre-trained values); `task`: an ft.Task
    or a task name for ft.load_task (tokenized with the model's tokenizer).

    config: a TrainConfig, a preset name ("paper", "quick", ...) or None (the paper's); train_options are
    TrainConfig fields overriding it (epochs=, lr=, batch_size=, warmup=, patience=, max_length=,
    max_train_examples=, max_eval_examples=, ...). ffn_levels: the fraction of FFNs pruned at each level
    (one per level, each in [0, 1)), "authors" (k FFNs at level k/10, the authors' BERT-base pairing) or
    None (the levels themselves). granularity="neuron": each level prunes FFN neurons at its FFN level instead
    of whole FFNs (select(..., granularity="neuron", neuron_multiple=...), widths rounded to neuron_multiple).

    workers: run the trials on that many worker processes of one torch.distributed job on this machine
    (needs out_dir; returns worker 0's result, equal to a single-process run's). Under torchrun every worker
    calls search() with the same arguments (workers=None) and the job shares the trials."""
    arguments = dict(locals())  # as given: what launched workers receive
    train_config = as_config("paper" if config is None else config, **train_options)
    levels, kinds, seeds = _check(levels, kinds, seeds, estimator, selection_fraction, importance_examples, backend)
    check_granularity(granularity, neuron_multiple)  # the width check needs the model: below
    check_ffn_levels(levels, ffn_levels)
    job = _workers(workers)  # None: this process launches `workers` workers
    device = resolve_device(device)
    if out_dir is not None:  # the user's files, another command's run, an unwritable path: refused now
        check_target(out_dir, "search", resume=resume)
    if job is None:
        return search_on_workers(workers, model, task, _worker_options(arguments))
    if job.distributed and out_dir is None:
        raise ValueError(f"a search on {job.world_size} workers needs out_dir (--out): the run directory they share")
    # device: cuda:(local_rank mod GPUs) for a job's worker
    return _run_here(job, model, task, train_config, levels, kinds, seeds, job.device(device), arguments)


def _run_here(job, model, task, train_config, levels, kinds, seeds, device, a: dict) -> SearchResult:
    """search() in this process, alone or as one worker of a job, once the arguments are checked (levels,
    kinds, seeds normalized; device this worker's); `a`: search()'s other arguments as given."""
    out_dir, ffn_levels, backend = a["out_dir"], a["ffn_levels"], a["backend"]
    pretrained, task = _load_checked(model, task, train_config.max_length, a["data_dir"], backend)
    if getattr(task, "max_length", None):  # a Task given tokenized: its length is the run's
        train_config = train_config.replace(max_length=task.max_length)
    selection, ffn = _checked_on_model(pretrained, levels, ffn_levels, a["granularity"], a["neuron_multiple"])
    check_backend_runs(pretrained, device, backend)

    data = SearchData.of(task, train_config, a["selection_fraction"], a["importance_examples"])
    plan = {"levels": list(levels), "ffn_levels": None if ffn == levels else list(ffn), "kinds": list(kinds),
            "seeds": list(seeds), "estimator": a["estimator"], "selection_fraction": a["selection_fraction"]}
    run_config = _run_config(pretrained, task, a["data_dir"], data, train_config, plan, selection)
    store = ResultStore(out_dir) if out_dir is not None else None
    if store is not None:
        start_store(job, store, run_config, a["resume"])
    if train_config.dropout is None:  # the task's task-layer dropout (0.3 MNLI, 0.05 CoLA, 0.1 otherwise)
        train_config = train_config.replace(dropout=task.dropout)
    progress = a["progress"] and job.is_main  # one progress bar per job
    runner = Runner(pretrained, task, data, train_config, a["estimator"], backend, device, progress, store, selection,
                    job)
    rows, chosen = runner.run(plan_trials(levels, kinds, seeds, ffn))
    result = SearchResult(rows, run_config, out_dir=out_dir, tickets=runner.tickets)
    if chosen is not None:
        result.super_row, result.super_ticket = chosen, runner.tickets[chosen["id"]]
    if store is not None and job.is_main:  # worker 0 draws, once, at the end
        result.plot()
    return result


def _checked_on_model(pretrained, levels, ffn_levels, granularity, neuron_multiple):
    """The checks that need the model (neuron widths, levels that prune something): (selection options,
    FFN level per level)."""
    check_granularity(granularity, neuron_multiple, intermediate_size=pretrained.config.intermediate_size)
    selection = {} if granularity == "ffn" else {"granularity": granularity, "neuron_multiple": int(neuron_multiple)}
    return selection, _check_levels_on(pretrained, levels, ffn_levels, selection)


def _run_config(pretrained, task, data_dir, data, train_config, plan: dict, selection: dict) -> dict:
    """What config.json records and a resume must match: the plan, training, data and model identity, code."""
    return {
        "model_name": pretrained.name_or_path, "task": task.name, "metric": primary_metric(task), **plan,
        **train_config.to_dict(), **data.counts(), "data": _data_identity(task, data_dir, data),
        "model": model_identity(pretrained), "code_version": code_version(),
        **selection,  # recorded only for neuron-level runs: whole-FFN runs keep their identity
    }


def _worker_options(arguments: dict) -> dict:
    """search()'s keyword arguments for its launched workers: the same, less model, task and workers."""
    options = {k: v for k, v in arguments.items() if k not in ("model", "task", "workers", "train_options")}
    return {**options, **arguments["train_options"]}


def _workers(workers) -> Workers | None:
    """This process's place in the job that runs the search: alone, a torchrun worker, or None when it is to
    launch `workers` workers itself."""
    if workers is not None:
        check_nproc(workers)
    if in_torchrun():
        stop_on_sigterm()  # the agent ends the others with SIGTERM when one fails: leave no lock or temp file
        job = Workers.from_env().scoped(f"search-{next(_SEARCHES)}")
        if workers is not None and workers != job.world_size:
            raise ValueError(f"workers={workers} inside a torchrun job of {job.world_size} workers; allowed: None "
                             f"(torchrun's --nproc-per-node and --nnodes set the workers)")
        return job
    return None if workers is not None and workers > 1 else Workers()


def check_arguments(levels, kinds=("winning",), seeds=(0,), *, ffn_levels=None, estimator="paper",
                    selection_fraction=0.1, importance_examples=None, backend="auto", granularity="ffn",
                    neuron_multiple=64) -> None:
    """search()'s checks that need no model or data (a launcher runs them before starting its workers)."""
    levels = _check(levels, kinds, seeds, estimator, selection_fraction, importance_examples, backend)[0]
    check_granularity(granularity, neuron_multiple)
    check_ffn_levels(levels, ffn_levels)


def _check(levels, kinds, seeds, estimator, selection_fraction, importance_examples, backend):
    for level in levels:
        check_level(level)
    levels = tuple(float(l) for l in levels)
    if not levels:
        raise ValueError("levels is empty; allowed: fractions pruned in (0, 1), e.g. 0.1 ... 0.8")
    ids = [Trial("winning", level, 0).id for level in levels]
    if len(set(ids)) != len(ids):
        raise ValueError(f"levels={levels} repeat a level (to 0.1 %); allowed: distinct fractions")
    kinds = tuple(kinds)
    for kind in kinds:
        check_level(0.5, kind)
    if not kinds or len(set(kinds)) != len(kinds):  # a repeated kind would train its tickets twice
        raise ValueError(f"kinds={kinds}; allowed: distinct kinds, a non-empty subset of {KINDS}")
    seeds = tuple(check_seed(int(s), "seeds value") for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds}; allowed: distinct integers, at least one")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator {estimator!r} is unknown; allowed: {ESTIMATORS}")
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"selection_fraction={selection_fraction}; allowed: (0, 1)")
    if importance_examples is not None and importance_examples < 1:
        raise ValueError(f"importance_examples={importance_examples}; allowed: None (all) or a positive count")
    check_backend_name(backend)
    return levels, kinds, seeds


def _load_checked(model, task, max_length: int, data_dir, backend: str):
    """(the pre-trained model on CPU, the Task), both loaded and checked against each other: label count,
    label values, lengths against the model's positions."""
    pretrained = model if isinstance(model, TicketModel) else None
    if task is None or isinstance(task, str):
        check_task_name(task or "rotten_tomatoes")
        if pretrained is not None and max_length > pretrained.config.max_length:  # before tokenizing anything
            raise ValueError(f"max_length={max_length} exceeds the model's {pretrained.config.max_length} positions; "
                             f"allowed: 2..{pretrained.config.max_length}")
        task = load_task(task or "rotten_tomatoes", tokenizer=_tokenizer_source(model), max_length=max_length,
                         data_dir=data_dir)
    if not isinstance(task, Task):
        raise ValueError(f"task of type {type(task).__name__}; allowed: an ft.Task or a task name")
    if pretrained is None:
        pretrained = load_model(model, num_labels=task.num_labels)
    elif pretrained.config.num_labels != task.num_labels:
        raise ValueError(f"model has {pretrained.config.num_labels} labels but task {task.name!r} has {task.num_labels}")
    positions = pretrained.config.max_length
    if (getattr(task, "max_length", None) or 0) > positions:
        raise ValueError(f"max_length={task.max_length} exceeds the model's {positions} positions; allowed: 2..{positions}")
    check_task_fits(task, pretrained.config.num_labels, positions)
    pretrained = copy.deepcopy(pretrained).cpu().eval()  # the rewinding point, never trained
    pretrained.backend = backend
    return pretrained, task


def _check_levels_on(model: TicketModel, levels, ffn_levels, selection=None) -> tuple[float, ...]:
    """The FFN level of each level (trials.resolve_ffn_levels); an impossible level, or one that prunes
    nothing, fails now, not after the first fine-tuning."""
    ffn = resolve_ffn_levels(levels, ffn_levels, model.num_layers)
    for level, ffn_level in zip(levels, ffn):
        check_level_prunes(model, level, ffn_level, selection)
    return ffn


def check_level_prunes(pretrained: TicketModel, level: float, ffn_level: float | None = None, selection=None) -> None:
    """select() refuses an impossible level; a level that rounds to no pruned head or FFN (or FFN neuron, with
    selection={"granularity": "neuron", ...}) is refused too."""
    layers, heads = pretrained.num_layers, pretrained.num_heads
    selection = selection or {}
    neurons = torch.zeros(layers, pretrained.config.intermediate_size) if selection else None
    ticket = select(Importance(torch.zeros(layers, heads), torch.zeros(layers), neurons=neurons), level,
                    ffn_sparsity=ffn_level, **selection)
    if bool(ticket.heads.all()) and bool(ticket.ffn.all()) and (neurons is None or bool(ticket.neurons.all())):
        raise ValueError(f"level {level} prunes nothing on a model of {layers} layers x {heads} heads "
                         f"(round({level} * {layers * heads}) = 0 heads, 0 of {layers} FFNs); "
                         f"allowed: levels of at least {0.5 / (layers * heads):.3g}")


def check_backend_runs(pretrained: TicketModel, device, backend: str) -> None:
    """An explicit backend that cannot run on `device` (the CUDA extension not built, Triton on CPU) fails now,
    in one forward pass of two tokens, not in the first fine-tuning after the run directory was written."""
    if backend == "auto":
        return  # auto falls back to torch, which runs everywhere
    net = pretrained if torch.device(device).type == "cpu" else copy.deepcopy(pretrained).to(device)
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    with torch.no_grad():
        net(ids, attention_mask=torch.ones_like(ids))


def _data_identity(task: Task, data_dir, data: SearchData) -> dict:
    """What the data of a run is: task, resolved data directory, and hashes of the tokenized splits used."""
    where = data_dir if data_dir is not None else getattr(task, "data_dir", None)
    dev = data.selection, data.heldout
    return {"task": task.name, "data_dir": os.path.realpath(where) if where is not None else None,
            "train_sha256": fingerprint_dataset(data.train),
            "dev_sha256": [fingerprint_dataset(d) for d in dev],
            "extra_dev_sha256": {n: fingerprint_dataset(d) for n, d in data.extra.items()}}


def _tokenizer_source(model):
    """Where the tokenizer of `model` lives: its checkpoint directory or hub name."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    source = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not source:
        raise ValueError("cannot tell which tokenizer this model uses (no name_or_path): pass an ft.Task "
                         "tokenized with it instead of a task name")
    return source


