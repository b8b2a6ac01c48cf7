"""The trial loop of ft.search: runs the planned trials that are not finished yet, one row each.

A trial: the pre-trained model with its task layer re-initialized from the seed (fresh_model), rewound to
the trial's ticket (a physically compact model) unless it is the full model, fine-tuned with the run's
TrainConfig, then evaluated on the selection split, the held-out split and every extra dev split (MNLI's
dev_mismatched). The full trial also scores importance. Per trial the store receives, in this order: the
importance (full trials), the model when it is its seed's best winner so far (kept_models), the worker
record, the row, the pruning of models that stopped being best, results.json. run() ends by settling the
super tickets. On many workers (distributed.Workers) each runs the trials it claims (sweep.TrialQueue); once
all are finished, worker 0 settles and writes the final files, as a single process would.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..data.batching import seeded_subset
from ..data.metrics import primary_metric
from ..distributed import WorkerFailed, Workers
from ..models import TicketModel
from ..report import chosen_super_ticket, results_document, seed_super_tickets
from ..train import TrainConfig, evaluate, fine_tune
from . import kept_models
from .importance import Importance, importance
from .rewind import rewind, ticket_of
from .select import round_half_up, select
from .store import ResultStore
from .sweep import TrialQueue, worker_record
from .ticket import Ticket
from .trials import Trial

SELECTION_SEED = 0  # the selection/held-out split of dev is the same for every seed and trial


def split_dev(dev, fraction: float = 0.1, seed: int = SELECTION_SEED):
    """(selection, held-out): a fixed, seeded `fraction` of dev and the rest."""
    n = len(dev)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = max(1, round_half_up(fraction * n))
    if k >= n:
        raise ValueError(f"dev has {n} examples: too few to split off a selection set of {fraction:.0%}")
    return dev.select(sorted(order[:k])), dev.select(sorted(order[k:]))


@dataclass
class SearchData:
    """The splits a search uses: seeded subsets of the task's train / dev / extra dev sets (the config's
    budgets), dev split into selection and held-out, and the training examples importance scores."""

    train: object
    selection: object
    heldout: object
    scoring: object
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, task, config: TrainConfig, fraction: float, importance_examples: int | None) -> "SearchData":
        train = seeded_subset(task.train, config.max_train_examples, seed=SELECTION_SEED)
        selection, heldout = split_dev(seeded_subset(task.dev, config.max_eval_examples, seed=SELECTION_SEED), fraction)
        extra = {name: seeded_subset(data, config.max_eval_examples, seed=SELECTION_SEED)
                 for name, data in sorted((getattr(task, "extra_dev", None) or {}).items())}
        return cls(train, selection, heldout, seeded_subset(train, importance_examples, seed=SELECTION_SEED), extra)

    def counts(self) -> dict:
        return {"train_examples": len(self.train), "selection_examples": len(self.selection),
                "heldout_examples": len(self.heldout), "importance_examples": len(self.scoring),
                "extra_dev_examples": {name: len(data) for name, data in self.extra.items()}}


def fresh_model(pretrained: TicketModel, seed: int) -> TicketModel:
    """The pre-trained model with its task layer re-initialized from the fine-tuning seed (BERT keeps its
    pre-trained pooler, as Hugging Face fine-tuning does)."""
    net = copy.deepcopy(pretrained)
    net.reset_head(seed, keep_pooler=True)
    return net


def param_counts(model: TicketModel) -> dict:
    """total: every parameter of the classification model (embeddings, encoder, pooler, task layer);
    encoder: the transformer layers only."""
    encoder = sum(p.numel() for name, p in model.named_parameters() if name.startswith("layers."))
    return {"total": sum(p.numel() for p in model.parameters()), "encoder": encoder}


class TrialFailed(RuntimeError):
    """A trial raised on one worker of a job (its id and error); the other workers stop."""


class Runner:
    def __init__(self, pretrained, task, data: SearchData, config: TrainConfig, estimator: str, backend: str, device,
                 progress: bool, store: ResultStore | None, selection: dict | None = None,
                 workers: Workers | None = None):
        self.pretrained, self.task, self.data, self.config = pretrained, task, data, config
        self.selection = dict(selection or {})  # select()'s granularity options ({} = whole FFNs)
        self.estimator, self.backend, self.device, self.progress, self.store = estimator, backend, device, progress, store
        self.workers = workers if workers is not None else Workers()
        self.full_params = param_counts(pretrained)
        self.metric = primary_metric(task)
        self.scores: dict[int, Importance] = {}
        self.tickets: dict[str, Ticket] = {}

    def run(self, trials: list[Trial]) -> tuple[list[dict], dict | None]:
        """(rows in plan order, the chosen super ticket's row or None)."""
        done = self.store.finished() if self.store is not None else {}
        queue = TrialQueue(self.workers, trials, done, self.importance_ready)
        bar = tqdm(total=len(trials), initial=len(trials) - len(queue), desc=f"search {self.task.name}", unit="trial",
                   disable=not self.progress)
        for trial in queue:
            bar.set_postfix_str(trial.id)
            done[trial.id] = self.run_claimed(trial)
            bar.update(self._write_results(done, trials) - bar.n)  # every worker's finished trials
        bar.close()
        self.workers.barrier("trials-finished")
        if self.workers.distributed:
            done = self.store.finished()  # every worker's rows
        rows = [done[t.id] for t in trials if t.id in done]
        for row in rows:
            if row["kind"] != "full" and row["id"] not in self.tickets:
                self.tickets[row["id"]] = Ticket.from_dict(row["ticket"])
        if self.store is None or not self.workers.is_main:
            return rows, chosen_super_ticket(seed_super_tickets(rows))
        chosen = kept_models.settle(self.store, rows)
        if chosen is not None:
            self.store.write_json("super_ticket.json", {**self.tickets[chosen["id"]].to_dict(), "row": chosen})
        self.store.write_json("results.json", results_document(rows))
        return rows, chosen

    def importance_ready(self, seed: int) -> bool:
        """Whether `seed`'s importance scores exist (in memory or as a file another worker or an earlier job wrote)."""
        return seed in self.scores or (self.store is not None and os.path.exists(self.importance_path(seed)))

    def importance_path(self, seed: int) -> str:
        return self.store.path(f"importance-seed{seed}.json")

    def scores_of(self, seed: int) -> Importance:
        if seed not in self.scores:
            self.scores[seed] = Importance.load(self.importance_path(seed))
        return self.scores[seed]

    def run_claimed(self, trial: Trial) -> dict:
        """run_trial; on many workers, a failure is reported to the others (trial id and error) before it raises."""
        try:
            return self.run_trial(trial)
        except WorkerFailed:
            raise
        except Exception as exc:
            if not self.workers.distributed:
                raise
            what = f"trial {trial.id}: {type(exc).__name__}: {exc}"
            self.workers.fail(what)
            if isinstance(exc, ValueError):  # bad input found during the trial (a corrupt file): still exit 2
                raise ValueError(f"{self.workers.name()}: {what}") from exc
            raise TrialFailed(what) from exc

    def run_trial(self, trial: Trial) -> dict:
        start = time.perf_counter()
        net = fresh_model(self.pretrained, trial.seed)
        if trial.kind != "full":
            ffn = None if trial.ffn == trial.level else trial.ffn
            self.tickets[trial.id] = select(self.scores_of(trial.seed), trial.level, kind=trial.kind, seed=trial.seed,
                                            ffn_sparsity=ffn, **self.selection)
            net = rewind(net, self.tickets[trial.id])  # compact: pruned structures cost nothing from here on
        result = fine_tune(net, self.data.train, self.data.selection, config=self.config, metric=self.task,
                           seed=trial.seed, device=self.device, progress=self.progress)
        if trial.kind == "full":
            self.scores[trial.seed] = importance(net, self.data.scoring, estimator=self.estimator,
                                                 batch_size=self.config.batch_size, backend=self.backend, progress=False,
                                                 granularity=self.selection.get("granularity", "ffn"))
            if self.store is not None:  # before the row: a finished full trial always has its scores
                self.store.write_json(os.path.basename(self.importance_path(trial.seed)), self.scores[trial.seed].to_dict())
        row = self.row(trial, net, result, start)
        if self.store is not None:
            if trial.kind == "winning":  # the model first, then its row
                kept_models.keep_if_best(self.store, row, net)
            self.store.write_worker(trial.id, worker_record(self.workers))
            self.store.write_row(trial.id, row)
            if trial.kind == "winning":
                kept_models.prune(self.store, trial.seed)
        return row

    def row(self, trial: Trial, net, result, start: float) -> dict:
        ticket = self.tickets.get(trial.id, ticket_of(net))
        if ticket != ticket_of(net):
            raise AssertionError(f"trial {trial.id}: the trained model does not embody its ticket")
        batch_size = self.config.eval_batch_size or 2 * self.config.batch_size
        scored = lambda data: evaluate(net, data, metric=self.task, batch_size=batch_size, device=self.device)  # noqa: E731
        sel, held = scored(self.data.selection), scored(self.data.heldout)
        extra = {name: scored(data) for name, data in self.data.extra.items()}
        counts = param_counts(net)
        neurons = {} if ticket.neurons is None else {"neurons_kept": int(ticket.kept_neurons().sum())}
        return {
            "id": trial.id, "kind": trial.kind, "level": trial.level, "ffn_level": trial.ffn, "seed": trial.seed,
            "selection": sel, "heldout": held, "selection_score": sel[self.metric], "heldout_score": held[self.metric],
            "extra": extra, "extra_scores": {name: m[self.metric] for name, m in extra.items()},
            "heads_kept": int(ticket.heads.sum()), "ffn_kept": int(ticket.ffn.sum()),
            "params": counts["total"], "encoder_params": counts["encoder"],
            "weights_remaining": 100.0 * counts["total"] / self.full_params["total"],
            "encoder_weights_remaining": 100.0 * counts["encoder"] / self.full_params["encoder"],
            "steps": result.steps, "best_step": result.best_step, "seconds": round(time.perf_counter() - start, 2),
            "ticket": ticket.to_dict(), **neurons,
        }

    def _write_results(self, done: dict, trials: list[Trial]) -> int:
        """Rewrites results.json (with other workers' rows too; worker 0 rewrites it at the end); returns the
        number of finished trials."""
        if self.store is not None and self.workers.distributed:
            done = self.store.finished()
        rows = [done[t.id] for t in trials if t.id in done]
        if self.store is not None:
            self.store.write_json("results.json", results_document(rows))
        return len(rows)
