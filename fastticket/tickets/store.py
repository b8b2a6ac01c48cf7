"""The result store of a search run directory: one atomically written JSON file per finished trial.

    out_dir/fastticket_run.json  which command wrote the directory (rundir): only `search` writes into it
    out_dir/fastticket.lock      held while a job runs (rundir.RunLock); a second job is refused
    out_dir/config.json          what defines the results, incl. the data, model and code identity (a resumed
                                 run must match it; differences are named)
    out_dir/trials/<id>.json     one row per finished trial, written once, never rewritten
    out_dir/trials/<id>.worker   which worker of which job ran it (written just before the row, never replaced:
                                 a second writer fails, so no trial is run twice; not in the row, which stays
                                 equal to a single-process run's)
    out_dir/results.json         {"rows": [...]}, rebuilt from the trial files after every trial
    out_dir/importance-seed<s>.json, tickets/<id>.json, super_ticket.json

A kill -9 at any point leaves only whole files: a trial is either finished (its file exists) or not. The
temporary files of a killed writer, and the worker files and importance scores of trials whose row was
never written, are removed when the next job starts (so no worker cuts tickets from scores that the rerun
full trial is about to replace). The workers of a multi-worker job: worker 0 start()s the store, the others join().
"""

from __future__ import annotations

import json
import os
import re
import uuid

from ..rundir import RunLock, claim, clean_leftovers, config_differences
from ..utils import TMP_PREFIX, atomic_write_text, tmp_tag
from .ticket import Ticket

TRIALS_DIR = "trials"  # out_dir/trials/: one file per finished trial, and the kept models

COMMAND = "search"
WORKER_SUFFIX = ".worker"
INFORMATIONAL_KEYS = ("model_name",)  # for tables and plots only: the model's identity is config["model"]


def dumps(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)


class ResultStore:
    def __init__(self, out_dir: str):
        self.out_dir = os.fspath(out_dir)
        self.trials_dir = os.path.join(self.out_dir, TRIALS_DIR)
        self.lock: RunLock | None = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    def start(self, config: dict, resume: bool, *, lock_token: str | None = None) -> None:
        """Claims the directory for `search`, takes its lock (lock_token: join the lock of the job's launcher),
        removes leftovers of killed writers, then records `config` or, with resume, checks it equals the
        recorded one. Without resume, refuses a directory that already holds results (nothing written is ever
        overwritten by a new run). Released by close(), or by rundir.releases_run_locks around the caller."""
        claim(self.out_dir, COMMAND, resume=resume)
        self.lock = RunLock(self.out_dir, token=lock_token, join=lock_token is not None, command=COMMAND).acquire()
        clean_leftovers(self.out_dir)
        self._remove_unfinished_worker_files()
        self._remove_unfinished_importance()
        recorded = self.path("config.json")
        if os.path.exists(recorded):
            if not resume:
                raise ValueError(f"{self.out_dir!r} already holds a search; pass --resume (resume=True) to continue it, "
                                 f"or choose another output directory")
            old = read_json(recorded, "run configuration")
            ignore = lambda c: {k: v for k, v in c.items() if k not in INFORMATIONAL_KEYS}  # noqa: E731
            new = json.loads(dumps(config))  # as it would be recorded (tuples become lists)
            diff = config_differences(ignore(old) if isinstance(old, dict) else old, ignore(new))
            if diff:
                raise ValueError(f"cannot resume {self.out_dir!r} with a different configuration ({'; '.join(diff)})")
            return
        try:
            os.makedirs(self.trials_dir, exist_ok=True)
            atomic_write_text(recorded, dumps(config))
        except OSError as exc:
            raise ValueError(f"cannot write {recorded}: {exc.strerror or exc}") from None

    def join(self, lock_token: str) -> None:
        """A worker of a job whose worker 0 start()ed the store: joins its lock (nothing else to claim or check:
        the workers agreed on the configuration before worker 0 recorded or checked it)."""
        self.lock = RunLock(self.out_dir, token=lock_token, join=True, command=COMMAND).acquire()

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def finished(self) -> dict[str, dict]:
        if not os.path.isdir(self.trials_dir):
            return {}
        rows = {}
        for name in sorted(os.listdir(self.trials_dir)):
            if name.endswith(".json") and not name.startswith("."):
                path = os.path.join(self.trials_dir, name)
                row = read_json(path, "trial file")
                if not isinstance(row, dict) or row.get("id") != name[:-5]:
                    raise ValueError(f"trial file {path} is not a trial row of this run (its id is "
                                     f"{row.get('id') if isinstance(row, dict) else None!r}); delete it to re-run that trial")
                if "ticket" in row:
                    try:
                        Ticket.from_dict(row["ticket"])
                    except ValueError as exc:
                        raise ValueError(f"trial file {path} holds no valid ticket ({exc}); delete it to re-run that trial") from None
                rows[name[:-5]] = row
        return rows

    def write_row(self, trial_id: str, row: dict) -> None:
        atomic_write_text(os.path.join(self.trials_dir, f"{trial_id}.json"), dumps(row))

    def write_worker(self, trial_id: str, worker: dict) -> None:
        """Records who ran `trial_id` (before its row); refuses to replace an earlier record: a trial runs once."""
        path = os.path.join(self.trials_dir, trial_id + WORKER_SUFFIX)
        try:
            create_once(path, dumps(worker))
        except FileExistsError:
            raise RuntimeError(f"trial {trial_id} was already run ({path}: {read_json(path, 'worker file')}); "
                               f"two workers claimed the same trial") from None

    def workers(self) -> dict[str, dict]:
        """trial id -> the worker record of every finished trial that has one."""
        finished = set(self.finished())
        return {trial_id: read_json(os.path.join(self.trials_dir, trial_id + WORKER_SUFFIX), "worker file")
                for trial_id in sorted(finished)
                if os.path.exists(os.path.join(self.trials_dir, trial_id + WORKER_SUFFIX))}

    def _remove_unfinished_worker_files(self) -> None:
        """Worker files without a row: their trial was killed between the two writes; it runs again."""
        if not os.path.isdir(self.trials_dir):
            return
        for name in os.listdir(self.trials_dir):
            trial_id = name[: -len(WORKER_SUFFIX)]
            if (name.endswith(WORKER_SUFFIX) and not name.startswith(".")
                    and not os.path.exists(os.path.join(self.trials_dir, trial_id + ".json"))):
                os.unlink(os.path.join(self.trials_dir, name))

    def _remove_unfinished_importance(self) -> None:
        """importance-seed<s>.json without the row of seed<s>-full: that trial was killed after scoring."""
        for name in os.listdir(self.out_dir):
            match = re.fullmatch(r"importance-seed(-?\d+)\.json", name)
            if match and not os.path.exists(os.path.join(self.trials_dir, f"seed{match.group(1)}-full.json")):
                os.unlink(self.path(name))

    def write_json(self, name: str, obj) -> None:
        atomic_write_text(self.path(name), dumps(obj))


def read_json(path: str, what: str):
    """json.load, with one ValueError naming the file and what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{what} {path} is corrupt or truncated ({exc})") from None


def create_once(path: str, text: str) -> None:
    """Writes a new file that appears whole (hard link of a complete temp file); FileExistsError if `path` exists."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{tmp_tag()}{uuid.uuid4().hex[:8]}-{name}")
    atomic_write_text(tmp, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive create (a reader may see it empty briefly)
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    finally:
        os.unlink(tmp)
