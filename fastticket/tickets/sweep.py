"""One search on many workers (torch.distributed): who runs which trial, and how the workers share a run.

    TrialQueue          the trials this worker runs: each unfinished trial goes to exactly one worker, the
                        first to claim it in the job's store; a seed's full trial first (it unlocks that seed's
                        tickets), a ticket only once its seed's importance file exists
    start_store         the workers agree on the configuration (compared through the store: a difference is
                        one ValueError naming it, in every worker), worker 0 starts the result store, the others
                        join its lock
    search_on_workers   ft.search(..., workers=N): this process claims and locks the run directory, then runs
                        N workers (distributed.launch_function); `fastticket search --nproc N` does the same
                        with `python -m fastticket` workers

Tokenization is not shared: every worker tokenizes the task in memory, identically (tokenizers are
deterministic; nothing is written, so there is no cache to race on or to invalidate), and the hashes of the
tokenized splits are part of the configuration the workers compare, so a worker that tokenized differently
(another tokenizer version on another node) stops the job before any training.
"""

from __future__ import annotations

import contextlib
import os
import time

from ..distributed import POLL_SECONDS, JobFailed, Workers, launch_function
from .store import ResultStore
from .trials import Trial

LOCK_TOKEN_VARIABLE = "FASTTICKET_RUN_LOCK_TOKEN"  # the launcher's run lock, which the workers join


class TrialQueue:
    """Iterates over the trials this worker claims (see the module docstring). A worker waits only while
    every unclaimed trial waits for its seed's importance; it stops (WorkerFailed) once another worker failed."""

    def __init__(self, workers: Workers, trials: list[Trial], finished, importance_ready):
        self.workers, self.importance_ready = workers, importance_ready
        order = sorted(trials, key=lambda t: t.kind != "full")  # stable: plan order within each group
        self.pending = [t for t in order if t.id not in finished]
        # seeds whose full trial finished in an earlier job: their tickets can run (a missing scores file is
        # then an error the trial names, not a wait that never ends)
        self.scored = {t.seed for t in trials if t.kind == "full" and t.id in finished}

    def __len__(self) -> int:
        return len(self.pending)

    def __iter__(self):
        while self.pending:
            trial = self._claim_next()
            if trial is not None:
                yield trial
            elif self.pending:
                if not self.workers.distributed:  # cannot happen: a seed's full trial comes first
                    raise RuntimeError(f"no trial can run: {[t.id for t in self.pending]} wait for importance scores")
                self.workers.check()
                time.sleep(POLL_SECONDS)

    def _claim_next(self) -> Trial | None:
        for trial in list(self.pending):
            if trial.kind != "full" and trial.seed not in self.scored and not self.importance_ready(trial.seed):
                continue
            self.pending.remove(trial)  # claimed by this worker or by another: not offered again
            if self.workers.claim_once(f"trial/{trial.id}"):
                return trial
        return None


def start_store(workers: Workers, store: ResultStore, config: dict, resume: bool) -> None:
    """ResultStore.start in worker 0 (joining the launcher's lock when there is one), join in the others, after
    the workers agreed on everything that defines the run."""
    workers.agree("configuration", {"config": config, "out_dir": os.path.abspath(store.out_dir), "resume": resume})
    if not workers.is_main:
        store.join(workers.wait_for("store-started"))
        return
    try:
        store.start(config, resume, lock_token=os.environ.get(LOCK_TOKEN_VARIABLE))
    except Exception as exc:
        workers.fail(f"{type(exc).__name__}: {exc}")
        raise
    workers.publish("store-started", store.lock.token)


def worker_record(workers: Workers) -> dict:
    """What trials/<id>.worker holds: which worker of which job ran the trial."""
    import socket

    return {"rank": workers.rank, "world_size": workers.world_size, "local_rank": workers.local_rank,
            "job": workers.job_id, "host": socket.gethostname(), "pid": os.getpid()}


@contextlib.contextmanager
def held_for_workers(out_dir: str, resume: bool):
    """Claims `out_dir` for `search` and holds its lock while a launcher's workers run (yields the token they
    join). A job that failed before its store started leaves no trace: the marker (and the directory) this
    made are removed again when nothing else was written."""
    from ..rundir import MARKER_FILE, RunLock, claim, owner

    created_dir = not os.path.isdir(out_dir)
    created_marker = created_dir or owner(out_dir) is None
    claim(out_dir, "search", resume=resume)
    try:
        with RunLock(out_dir) as lock:
            yield lock.token
    finally:
        if created_marker and os.path.isdir(out_dir) and os.listdir(out_dir) == [MARKER_FILE]:
            os.unlink(os.path.join(out_dir, MARKER_FILE))
            if created_dir:
                os.rmdir(out_dir)


def search_on_workers(nproc: int, model, task, options: dict):
    """ft.search(model, task, **options) on `nproc` workers of one job on this machine; returns worker 0's
    SearchResult. The caller checked the arguments; this claims the run directory and holds its lock for the job."""
    out_dir = options.get("out_dir")
    if out_dir is None:
        raise ValueError(f"workers={nproc} needs out_dir: the run directory the workers share (on a file system "
                         f"every worker sees)")
    with held_for_workers(out_dir, options.get("resume", False)) as token:
        try:
            results = launch_function(nproc, search_worker, model, task, options, env={LOCK_TOKEN_VARIABLE: token})
        except JobFailed as exc:
            if exc.user_error:
                raise ValueError(str(exc)) from None
            raise
    return results[0]


def search_worker(model, task, options: dict):
    """One worker of search_on_workers (module-level: spawned workers import it)."""
    from .search import search

    return search(model, task, **options)  # search records a failure for the launcher
