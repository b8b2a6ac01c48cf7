"""Trained models of the per-seed super tickets in a search's run directory: race-free, bounded disk.

    trials/<id>.model/     the compact model of a winning trial that was its seed's best finished winner
                           when it finished (written before its row; ft.load_pruned reads it)
    super_ticket_model/    a copy of the chosen super ticket's model (report.chosen_super_ticket), made
                           when the search settles; ft.load_pruned and `fastticket export RUN` read it

Protocol, safe with several processes finishing trials of one seed at once (the workers of a sweep, sweep.py):
a finished winning trial re-reads the finished rows of its seed and exports its model only if it beats
all of them (report.pick_key), then writes its row, then removes the model of every finished row of that
seed that is not the seed's best. Rows never change, so a trial that lost once never becomes best, and a
model is only removed once its own row exists (a model still being written has no row yet): at most one
model per seed plus one per trial finishing concurrently. settle() (any process, any number of times)
removes what races left and copies the chosen model. Only directories named after finished trial rows
and holding a compact export are ever removed: they are this search's own.
"""

from __future__ import annotations

import os
import shutil

from ..models import export, load_pruned
from ..models.exporting import CONFIG_FILE
from ..report import chosen_super_ticket, pick_key, seed_super_tickets
from .store import ResultStore

SUPER_MODEL_DIR = "super_ticket_model"
MODEL_SUFFIX = ".model"


def model_dir(store: ResultStore, trial_id: str) -> str:
    return store.path("trials", trial_id + MODEL_SUFFIX)


def _winners(store: ResultStore, seed: int) -> list[dict]:
    return [r for r in store.finished().values() if r["kind"] == "winning" and r["seed"] == seed]


def keep_if_best(store: ResultStore, row: dict, net) -> bool:
    """Exports `net` beside the (not yet written) row when it beats every finished winner of its seed."""
    others = [r for r in _winners(store, row["seed"]) if r["id"] != row["id"]]
    if any(pick_key(r) > pick_key(row) for r in others):
        return False
    export(net, model_dir(store, row["id"]), format="compact")
    return True


def prune(store: ResultStore, seed: int) -> None:
    """Removes the models of finished winning rows of `seed` other than the seed's best."""
    rows = _winners(store, seed)
    best = seed_super_tickets(rows).get(seed)
    for r in rows:
        if best is not None and r["id"] != best["id"]:
            _remove_model(model_dir(store, r["id"]))


def settle(store: ResultStore, rows: list[dict]) -> dict | None:
    """Keeps one model per seed (its super ticket's), copies the chosen super ticket's model to
    super_ticket_model/ and returns its row (None before any winning row; the copy is skipped, and
    super_ticket_model/ left as it was, when that model is missing)."""
    for seed in sorted({r["seed"] for r in rows if r["kind"] == "winning"}):
        prune(store, seed)
    chosen = chosen_super_ticket(seed_super_tickets(rows))
    if chosen is not None and os.path.isfile(os.path.join(model_dir(store, chosen["id"]), CONFIG_FILE)):
        export(load_pruned(model_dir(store, chosen["id"])), store.path(SUPER_MODEL_DIR), format="compact")
    return chosen


def _remove_model(path: str) -> None:
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE)):
        shutil.rmtree(path, ignore_errors=True)
