"""Workers of one job on torch.distributed: torchrun starts them, its store coordinates them.

A sweep's trials are independent jobs, so workers need no collectives, only the key-value store that
torchrun's elastic agent already runs (TORCHELASTIC_USE_AGENT_STORE) or that rank 0 hosts: an atomic
counter hands out work (`claim`), keys publish facts (`publish` / `wait_for`), and one key says that a
worker failed, so the others stop between two pieces of work instead of starting new ones.

    Workers.from_env()   this process's place in a torchrun job, or a single-process stand-in
    launch(nproc, argv)  `python -m fastticket <argv>` as nproc workers of one job on this machine
    launch_function(nproc, fn, *args)   the same for a Python function (notebooks)
    JobFailed            what a failed job raises in its launcher: the root cause's worker and message

Both launchers run torch.distributed's elastic agent (what torchrun runs) in this process, standalone
rendezvous on localhost, so that a failed job ends in one line naming the failing worker's error instead of
the agent's report. A worker records its error for the launcher with record_failure (the agent's error file).
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import signal
import sys
import time
import uuid

import torch

FAILED = "failed"
POLL_SECONDS = 0.2
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class WorkerFailed(RuntimeError):
    """Another worker of the job failed; this one stops before starting more work."""


class JobFailed(RuntimeError):
    """A launched job failed: `rank` is the worker whose failure came first, `user_error` whether it was a
    ValueError (bad input: exit status 2), `exitcode` that worker's exit status (negative: a signal)."""

    def __init__(self, message: str, rank: int | None = None, exitcode: int = 1, user_error: bool = False):
        super().__init__(message)
        self.rank, self.exitcode, self.user_error = rank, exitcode, user_error


def in_torchrun() -> bool:
    """Whether this process is a worker of a torchrun job (RANK, WORLD_SIZE, LOCAL_RANK ... set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


class Workers:
    """rank / world_size / local_rank of this process and the job's store (None when alone)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, job_id: str | None = None,
                 store=None):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.job_id = job_id or f"solo-{os.getpid()}"
        self.store = store
        self._counters: dict[str, int] = {}
        self._keys: dict[str, str] = {}

    @classmethod
    def from_env(cls, timeout_s: float = 300.0) -> "Workers":
        """The torchrun job this process belongs to (RANK, WORLD_SIZE, MASTER_ADDR/PORT set), else alone."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1 or "MASTER_ADDR" not in os.environ:
            return cls()
        import torch.distributed as dist

        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # the agent hosts the store
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                              is_master=rank == 0 and not agent, timeout=datetime.timedelta(seconds=timeout_s),
                              wait_for_workers=False)
        job = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ["MASTER_ADDR"] + ":" + os.environ["MASTER_PORT"]
        job += f"/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"  # a restarted job claims afresh
        return cls(rank, world, local, job, dist.PrefixStore(f"fastticket/{job}/", store))

    def scoped(self, name: str) -> "Workers":
        """The same workers with keys, counters, barriers and failures of their own: one per piece of work
        that every worker starts in the same order (the n-th search of a job's script, say)."""
        import torch.distributed as dist

        store = dist.PrefixStore(f"{name}/", self.store) if self.store is not None else None
        return Workers(self.rank, self.world_size, self.local_rank, self.job_id, store)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.store is not None

    def name(self) -> str:
        return f"worker {self.rank} of {self.world_size}"

    def device(self, requested=None) -> torch.device:
        """cuda:(local_rank mod device count) on GPUs (several workers may share one), else `requested`."""
        dev = torch.device(requested) if requested is not None else None
        if (dev is None or (dev.type == "cuda" and dev.index is None)) and torch.cuda.is_available() and self.distributed:
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return dev if dev is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # ------------------------------------------------------------------------------- coordination

    def claim(self, counter: str) -> int:
        """The next index of `counter` (0, 1, 2, ...): each index goes to exactly one worker of the job."""
        self.check()
        if self.store is None:
            value = self._counters.get(counter, 0)
            self._counters[counter] = value + 1
            return value
        return int(self.store.add(f"counter/{counter}", 1)) - 1

    def claim_once(self, name: str) -> bool:
        """True for exactly one worker of the job (the first to ask), False for every later request."""
        return self.claim(f"once/{name}") == 0

    def agree(self, name: str, value: dict) -> None:
        """Every worker passes its `value` (JSON); returns when all are equal, else raises the same ValueError
        in every worker, naming each worker that differs from worker 0 and how."""
        from .rundir import config_differences

        if self.store is None:
            return
        self.publish(f"agree/{name}/{self.rank}", json.dumps(value, sort_keys=True))
        self.barrier(f"agree/{name}")
        values = [json.loads(self.lookup(f"agree/{name}/{r}")) for r in range(self.world_size)]
        differences = []
        for r in range(1, self.world_size):
            diff = config_differences(values[0], values[r])
            if diff:
                differences.append(f"worker {r} has {'; '.join(diff)} (worker 0 -> worker {r})")
        if differences:
            raise ValueError(f"the workers of this job disagree on the {name}: {', '.join(differences)}; allowed: the same "
                             f"arguments, data and model on every worker")

    def publish(self, key: str, value: str) -> None:
        if self.store is None:
            self._keys[key] = value
        else:
            self.store.set(f"key/{key}", value)

    def lookup(self, key: str) -> str | None:
        """The published value of `key`, or None (never blocks)."""
        if self.store is None:
            return self._keys.get(key)
        full = f"key/{key}"
        return self.store.get(full).decode("utf-8") if self.store.check([full]) else None

    def wait_for(self, key: str, ready=None) -> str:
        """Blocks until `key` is published (or `ready()` returns true); stops if a worker failed."""
        while True:
            value = self.lookup(key)
            if value is not None:
                return value
            if ready is not None and ready():
                return ""
            if self.store is None:
                raise RuntimeError(f"{key!r} will never be published: this process works alone")
            self.check()
            time.sleep(POLL_SECONDS)

    def barrier(self, name: str) -> None:
        """Returns once every worker of the job has reached barrier `name`."""
        if self.store is None:
            return
        arrived = int(self.store.add(f"barrier/{name}", 1))
        if arrived == self.world_size:
            self.publish(f"barrier/{name}", "open")
        self.wait_for(f"barrier/{name}")

    def fail(self, message: str) -> None:
        """Tells the other workers that this one failed (first failure wins)."""
        if self.store is not None and not self.store.check([FAILED]):
            self.store.set(FAILED, f"{self.name()}: {message}")

    def failure(self) -> str | None:
        if self.store is None or not self.store.check([FAILED]):
            return None
        return self.store.get(FAILED).decode("utf-8")

    def check(self) -> None:
        failed = self.failure()
        if failed is not None:
            raise WorkerFailed(f"stopping: {failed}")


def stop_on_sigterm() -> None:
    """torchrun ends a job's other workers with SIGTERM when one fails: turn it into SystemExit so that
    locks are released and temporary files removed on the way out."""

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def check_nproc(nproc) -> int:
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc={nproc!r}; allowed: an integer >= 1 (worker processes on this machine)")
    return nproc


def record_failure(exc: BaseException) -> None:
    """Writes `exc` into this worker's error file (torch elastic's TORCHELASTIC_ERROR_FILE), where the launcher
    reads the job's root cause; does nothing outside a job or for a failure that another worker caused."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ or isinstance(exc, (WorkerFailed, SystemExit, KeyboardInterrupt)):
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(exc)


def records_failures(fn):
    """Decorator: an exception leaving `fn` in a worker of a job is recorded for the launcher (record_failure)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            record_failure(exc)
            raise

    return wrapper


def launch(nproc: int, argv: list[str], env: dict | None = None) -> int:
    """Runs `python -m fastticket <argv>` as `nproc` workers of one torch.distributed job on this machine
    (torch elastic's agent, as torchrun runs it, standalone rendezvous); returns 0 or raises JobFailed.
    `env`: variables set for the workers (besides torchrun's)."""
    check_nproc(nproc)
    variables = dict(env or {})
    if "OMP_NUM_THREADS" not in os.environ:  # torchrun's rule: cores shared among the workers
        variables["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    _run_job(nproc, sys.executable, ("-m", "fastticket", *argv), variables)
    return 0


def launch_function(nproc: int, fn, *args, env: dict | None = None):
    """fn(*args) in `nproc` spawned workers of one job (torch.distributed's elastic_launch); returns
    {rank: fn's return value}, or raises JobFailed. fn must be importable (a module-level function)."""
    check_nproc(nproc)
    return _run_job(nproc, fn, args, dict(env or {}))


def _run_job(nproc: int, entrypoint, args, env: dict):
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    saved = {name: os.environ.get(name) for name in env}
    agent_loggers = {lg: lg.level for name, lg in logging.root.manager.loggerDict.items()
                     if name.startswith("torch.distributed") and isinstance(lg, logging.Logger)}
    os.environ.update(env)  # the agent starts the workers with this process's environment
    for lg in agent_loggers:  # the launcher reports a failure in one line (root_failure), not the agent's log
        lg.setLevel(logging.CRITICAL)
    try:
        return elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as exc:
        raise root_failure(exc, nproc) from None
    except SignalException as exc:  # the agent stopped the workers: Ctrl-C or a SIGTERM to this launcher
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise SystemExit(128 + int(exc.sigval)) from None
    finally:
        for lg, level in agent_loggers.items():
            lg.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def root_failure(exc, nproc: int) -> JobFailed:
    """The failure that ended a job: a worker's recorded error before an unexplained exit or a signal, the
    earliest first; the others (stopped because of it) are consequences."""
    def message(failure) -> str:
        text = failure.message
        return str(text.get("message", "")) if isinstance(text, dict) else str(text or "")

    def rank_key(item):
        rank, failure = item
        recorded = isinstance(failure.message, dict)  # written by record_failure (ErrorHandler)
        killed = failure.exitcode < 0 and failure.exitcode != -signal.SIGTERM
        return (0 if recorded else 1 if killed else 2, failure.timestamp, rank)

    rank, failure = min(exc.failures.items(), key=rank_key)
    who = f"worker {rank} of {nproc}"
    text = message(failure)
    if isinstance(failure.message, dict):
        kind, _, detail = text.partition(": ")
        user_error = kind == "ValueError"
        return JobFailed(detail if user_error else f"{who}: {text}", rank, 2 if user_error else failure.exitcode or 1,
                         user_error)
    if failure.exitcode < 0:
        name = failure.signal_name()
        return JobFailed(f"{who} (pid {failure.pid}) was killed by {name}; the job stopped: the trials already "
                         f"finished are kept, rerun with --resume (resume=True) to finish the rest", rank, failure.exitcode)
    return JobFailed(f"{who} exited with status {failure.exitcode}", rank, failure.exitcode)
