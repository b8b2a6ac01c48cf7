"""ft.search: the paper's whole procedure (ARCHITECTURE §1), automated and resumable.

Per seed: fine-tune the full model → score importance on the training set → cut a ticket per level ×
kind → rewind each into a physically compact model at pre-trained values (task head re-initialized with
the fine-tuning seed) → train it with the same schedule → evaluate on the selection split (a fixed,
seeded 10 % of dev) and on the held-out 90 %. The super ticket is the winning ticket with the best
selection score; its trained compact model is kept in out_dir/super_ticket_model. The trial list (trials.py) and the result store (store.py) stay apart from training, so
trials can later be fanned out over ranks.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..data.batching import seeded_subset
from ..data.metrics import primary_metric
from ..data.task import Task, check_task_fits, check_task_name, load_task
from ..models import TicketModel, export, load_model
from ..rundir import check_target, code_version, fingerprint_dataset, model_identity, releases_run_locks
from ..train import check_train_args, evaluate, fine_tune
from ..utils import resolve_device
from .importance import ESTIMATORS, Importance, importance
from .rewind import rewind, ticket_of
from ..defaults import display_name
from ..ops.dispatch import BACKENDS
from .select import KINDS, check_level, round_half_up, select
from .store import ResultStore
from .ticket import Ticket
from .trials import PAPER_LEVELS, Trial, plan_trials

SELECTION_SEED = 0  # the selection/held-out split of dev is the same for every seed and trial
SUPER_MODEL_DIR = "super_ticket_model"  # the trained compact super-ticket model (ft.load_pruned reads it)


@dataclass
class SearchResult:
    rows: list[dict]
    config: dict
    super_ticket: Ticket | None = None
    super_row: dict | None = None
    out_dir: str | None = None
    tickets: dict = field(default_factory=dict, repr=False)  # trial id -> Ticket

    def summary(self) -> list[dict]:
        from ..report import summarize

        return summarize(self.rows)

    def table(self) -> str:
        from ..report import format_table

        return format_table(self.summary(), self.config.get("metric", "score"))

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "rows": self.rows, "summary": self.summary(),
                           "super_ticket": self.super_row}, indent=1, sort_keys=True)

    def plot(self, path: str | None = None) -> str:
        """Draws phase_transition.png (into out_dir unless a path is given); returns its path."""
        from ..report import plot_phase_transition

        if path is None:
            if self.out_dir is None:
                raise ValueError("plot() needs a path when the search had no out_dir")
            path = os.path.join(self.out_dir, "phase_transition.png")
        title = f"{display_name(self.config.get('model_name'))} on {self.config.get('task')}"
        return plot_phase_transition(self.rows, path, self.config.get("metric", "score"), title)


@releases_run_locks  # the run lock store.start takes is released when search returns or raises
def search(
    model,
    task,
    levels=PAPER_LEVELS,
    kinds=("winning",),
    seeds=(0,),
    out_dir: str | None = None,
    *,
    estimator: str = "paper",
    epochs: int = 6,
    lr: float = 5e-5,
    batch_size: int = 32,
    warmup: float = 0.1,
    patience: int | None = 2,
    max_length: int = 128,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    importance_examples: int | None = None,
    selection_fraction: float = 0.1,
    data_dir: str | None = None,
    device=None,
    backend: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> SearchResult:
    """Runs (or resumes) a super-ticket search; see the module docstring. `model`: a checkpoint dir, hub
    name, HF model or TicketModel (its current weights are the pre-trained values); `task`: an ft.Task
    or a task name for ft.load_task (tokenized with the model's tokenizer). Every argument, the output
    directory, the device and the task's fit to the model are checked before anything is written or trained."""
    levels, kinds, seeds = _check(levels, kinds, seeds, estimator, selection_fraction,
                                  max_train_examples, max_eval_examples, importance_examples, backend)
    check_train_args(epochs, lr, batch_size, warmup, 1.0, 0.0, patience, None, None, None)
    device = resolve_device(device)
    if out_dir is not None:  # the user's files, another command's run, an unwritable path: refused now
        check_target(out_dir, "search", resume=resume)
    pretrained, task = _load_checked(model, task, levels, max_length, data_dir, backend)

    train = seeded_subset(task.train, max_train_examples, seed=SELECTION_SEED)
    dev = seeded_subset(task.dev, max_eval_examples, seed=SELECTION_SEED)
    selection, heldout = split_dev(dev, selection_fraction)
    scoring_data = seeded_subset(train, importance_examples, seed=SELECTION_SEED)
    metric = primary_metric(task)
    config = {
        "model_name": pretrained.name_or_path, "task": task.name, "metric": metric, "levels": list(levels),
        "kinds": list(kinds), "seeds": list(seeds), "estimator": estimator, "epochs": epochs, "lr": lr,
        "batch_size": batch_size, "warmup": warmup, "patience": patience,
        "max_length": getattr(task, "max_length", None) or max_length,
        "train_examples": len(train), "selection_examples": len(selection), "heldout_examples": len(heldout),
        "importance_examples": len(scoring_data), "selection_fraction": selection_fraction,
        "data": _data_identity(task, data_dir, train, dev), "model": model_identity(pretrained),
        "code_version": code_version(),
    }
    store = ResultStore(out_dir) if out_dir is not None else None
    if store is not None:
        store.start(config, resume)
    done = store.finished() if store is not None else {}
    schedule = dict(epochs=epochs, lr=lr, batch_size=batch_size, warmup=warmup, patience=patience,
                    dropout=getattr(task, "dropout", None), device=device, progress=progress)
    full_params = _param_counts(pretrained)
    trials = plan_trials(levels, kinds, seeds)
    tickets: dict[str, Ticket] = {}
    scores: dict[int, Importance] = {}

    bar = tqdm(trials, desc=f"search {task.name}", unit="trial", disable=not progress)
    for trial in bar:
        bar.set_postfix_str(trial.id)
        if trial.kind == "full" and trial.id in done:
            scores[trial.seed] = _saved_importance(store, trial.seed)
            continue
        if trial.kind != "full":
            tickets[trial.id] = (Ticket.from_dict(done[trial.id]["ticket"]) if trial.id in done
                                 else select(scores[trial.seed], trial.level, kind=trial.kind, seed=trial.seed))
            if trial.id in done:
                continue
        start = time.perf_counter()
        net = _fresh(pretrained, trial.seed)
        if trial.kind != "full":
            net = rewind(net, tickets[trial.id])  # compact: pruned structures cost nothing from here on
        result = fine_tune(net, train, selection, metric=task, seed=trial.seed, **schedule)
        if trial.kind == "full":
            scores[trial.seed] = importance(net, scoring_data, estimator=estimator, batch_size=batch_size,
                                            backend=backend, progress=False)
            if store is not None:  # before the row: a finished full trial always has its scores
                store.write_json(f"importance-seed{trial.seed}.json", scores[trial.seed].to_dict())
        ticket = tickets.get(trial.id, ticket_of(net))
        done[trial.id] = _row(trial, net, ticket, task, selection, heldout, batch_size, device, full_params, result, start)
        if store is not None:
            if trial.kind == "winning" and _best_winner(done)["id"] == trial.id:  # model first, then its row
                export(net, store.path(SUPER_MODEL_DIR), format="compact")
            store.write_row(trial.id, done[trial.id])
            store.write_json("results.json", {"rows": _ordered(done, trials)})
    rows = _ordered(done, trials)
    result = SearchResult(rows, config, out_dir=out_dir, tickets=tickets)
    best = _best_winner(done)
    if best is not None:
        result.super_row, result.super_ticket = best, tickets[best["id"]]
        if store is not None:
            store.write_json("super_ticket.json", {**result.super_ticket.to_dict(), "row": best})
    if store is not None:
        store.write_json("results.json", {"rows": rows})
        result.plot()
    return result


def _best_winner(done: dict) -> dict | None:
    """The winning row with the best selection score (ties: the sparser ticket, then the lower seed)."""
    winners = [r for r in done.values() if r["kind"] == "winning"]
    return max(winners, key=lambda r: (r["selection_score"], r["level"], -r["seed"])) if winners else None


def split_dev(dev, fraction: float = 0.1, seed: int = SELECTION_SEED):
    """(selection, held-out): a fixed, seeded `fraction` of dev and the rest."""
    n = len(dev)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = max(1, round_half_up(fraction * n))
    if k >= n:
        raise ValueError(f"dev has {n} examples: too few to split off a selection set of {fraction:.0%}")
    return dev.select(sorted(order[:k])), dev.select(sorted(order[k:]))


def _check(levels, kinds, seeds, estimator, selection_fraction, max_train, max_eval, importance_examples, backend):
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
    if not kinds:
        raise ValueError(f"kinds is empty; allowed: a subset of {KINDS}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds}; allowed: distinct integers, at least one")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator {estimator!r} is unknown; allowed: {ESTIMATORS}")
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"selection_fraction={selection_fraction}; allowed: (0, 1)")
    for name, value in (("max_train_examples", max_train), ("max_eval_examples", max_eval),
                        ("importance_examples", importance_examples)):
        if value is not None and value < 1:
            raise ValueError(f"{name}={value}; allowed: None (all) or a positive count")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is unknown; allowed: 'auto' or one of {BACKENDS}")
    return levels, kinds, seeds


def _load_checked(model, task, levels, max_length: int, data_dir, backend: str):
    """(the pre-trained model on CPU, the Task), both loaded and checked against each other: label count,
    label values, lengths against the model's positions, and every level against the model's size."""
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
    for level in levels:  # an impossible level, or one that prunes nothing, fails now, not after fine-tuning
        check_level_prunes(pretrained, level)
    return pretrained, task


def check_level_prunes(pretrained: TicketModel, level: float) -> None:
    """select() refuses an impossible level; a level that rounds to no pruned head or FFN is refused too."""
    layers, heads = pretrained.num_layers, pretrained.num_heads
    ticket = select(Importance(torch.zeros(layers, heads), torch.zeros(layers)), level)
    if bool(ticket.heads.all()) and bool(ticket.ffn.all()):
        raise ValueError(f"level {level} prunes nothing on a model of {layers} layers x {heads} heads "
                         f"(round({level} * {layers * heads}) = 0 heads, round({level} * {layers}) = 0 FFNs); "
                         f"allowed: levels of at least {0.5 / (layers * heads):.3g}")


def _data_identity(task: Task, data_dir, train, dev) -> dict:
    """What the data of a run is: task, resolved data directory, and hashes of the tokenized splits used."""
    where = data_dir if data_dir is not None else getattr(task, "data_dir", None)
    return {"task": task.name, "data_dir": os.path.realpath(where) if where is not None else None,
            "train_sha256": fingerprint_dataset(train), "dev_sha256": fingerprint_dataset(dev)}


def _tokenizer_source(model):
    """Where the tokenizer of `model` lives: its checkpoint directory or hub name."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    source = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not source:
        raise ValueError("cannot tell which tokenizer this model uses (no name_or_path): pass an ft.Task "
                         "tokenized with it instead of a task name")
    return source


def _fresh(pretrained: TicketModel, seed: int) -> TicketModel:
    """The pre-trained model with its task layer re-initialized from the fine-tuning seed (BERT keeps its
    pre-trained pooler, as Hugging Face fine-tuning does)."""
    net = copy.deepcopy(pretrained)
    net.reset_head(seed, keep_pooler=True)
    return net


def _saved_importance(store: ResultStore, seed: int) -> Importance:
    return Importance.load(store.path(f"importance-seed{seed}.json"))


def _param_counts(model: TicketModel) -> dict:
    encoder = sum(p.numel() for name, p in model.named_parameters() if name.startswith("layers."))
    return {"total": sum(p.numel() for p in model.parameters()), "encoder": encoder}


def _row(trial, net, ticket, task, selection, heldout, batch_size, device, full_params, result, start) -> dict:
    if ticket != ticket_of(net):
        raise AssertionError(f"trial {trial.id}: the trained model does not embody its ticket")
    sel = evaluate(net, selection, metric=task, batch_size=2 * batch_size, device=device)
    held = evaluate(net, heldout, metric=task, batch_size=2 * batch_size, device=device)
    metric = primary_metric(task)
    counts = _param_counts(net)
    return {
        "id": trial.id, "kind": trial.kind, "level": trial.level, "seed": trial.seed,
        "selection": sel, "heldout": held, "selection_score": sel[metric], "heldout_score": held[metric],
        "heads_kept": int(ticket.heads.sum()), "ffn_kept": int(ticket.ffn.sum()),
        "params": counts["total"], "encoder_params": counts["encoder"],
        "weights_remaining": 100.0 * counts["encoder"] / full_params["encoder"],
        "steps": result.steps, "best_step": result.best_step, "seconds": round(time.perf_counter() - start, 2),
        "ticket": ticket.to_dict(),
    }


def _ordered(done: dict, trials: list[Trial]) -> list[dict]:
    return [done[t.id] for t in trials if t.id in done]
