"""The result store of a search run directory: one atomically written JSON file per finished trial.

    out_dir/config.json          what defines the results (a resumed run must match it)
    out_dir/trials/<id>.json     one row per finished trial, written once, never rewritten
    out_dir/results.json         {"rows": [...]}, rebuilt from the trial files after every trial
    out_dir/importance-seed<s>.json, tickets/<id>.json, super_ticket.json

A kill -9 at any point leaves only whole files: a trial is either finished (its file exists) or not.
"""

from __future__ import annotations

import json
import os

from ..utils import atomic_write_text


def dumps(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)


class ResultStore:
    def __init__(self, out_dir: str):
        self.out_dir = os.fspath(out_dir)
        self.trials_dir = os.path.join(self.out_dir, "trials")

    def path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    def start(self, config: dict, resume: bool) -> None:
        """Records `config`; with resume, checks it equals the recorded one. Without resume, refuses a
        directory that already holds results (nothing written is ever overwritten by a new run)."""
        recorded = self.path("config.json")
        if os.path.exists(recorded):
            if not resume:
                raise ValueError(f"{self.out_dir!r} already holds a search; pass --resume (resume=True) to continue it, "
                                 f"or choose another output directory")
            with open(recorded, encoding="utf-8") as f:
                old = json.load(f)
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            if diff:
                details = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
                raise ValueError(f"cannot resume {self.out_dir!r} with a different configuration ({details})")
            return
        os.makedirs(self.trials_dir, exist_ok=True)
        atomic_write_text(recorded, dumps(config))

    def finished(self) -> dict[str, dict]:
        if not os.path.isdir(self.trials_dir):
            return {}
        rows = {}
        for name in sorted(os.listdir(self.trials_dir)):
            if name.endswith(".json") and not name.startswith("."):
                with open(os.path.join(self.trials_dir, name), encoding="utf-8") as f:
                    rows[name[:-5]] = json.load(f)
        return rows

    def write_row(self, trial_id: str, row: dict) -> None:
        atomic_write_text(os.path.join(self.trials_dir, f"{trial_id}.json"), dumps(row))

    def write_json(self, name: str, obj) -> None:
        atomic_write_text(self.path(name), dumps(obj))
