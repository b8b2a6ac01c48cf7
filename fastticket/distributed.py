"""Workers of one job on torch.distributed: torchrun starts them, its store coordinates them.

A sweep's trials are independent jobs, so workers need no collectives, only the key-value store that
torchrun's elastic agent already runs (TORCHELASTIC_USE_AGENT_STORE) or that rank 0 hosts: an atomic
counter hands out work (`claim`), keys publish facts (`publish` / `wait_for`), and one key says that a
worker failed, so the others stop between two pieces of work instead of starting new ones.

    Workers.from_env()   this process's place in a torchrun job, or a single-process stand-in
    launch(nproc, argv)  `python -m fastticket <argv>` under torch.distributed.run on this machine
    launch_function(nproc, fn, *args)   the same for a Python function (notebooks): elastic_launch
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
import uuid

import torch

FAILED = "failed"
POLL_SECONDS = 0.2


class WorkerFailed(RuntimeError):
    """Another worker of the job failed; this one stops before starting more work."""


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
        return cls(rank, world, local, job, dist.PrefixStore(f"fastticket/{job}/", store))

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


def launch(nproc: int, argv: list[str]) -> int:
    """Runs `python -m fastticket <argv>` as `nproc` workers of one torch.distributed job on this machine
    (torch.distributed.run, standalone rendezvous); returns the job's exit status."""
    check_nproc(nproc)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--max-restarts=0", "-m", "fastticket", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)


def launch_function(nproc: int, fn, *args):
    """fn(*args) in `nproc` spawned workers of one job (torch.distributed's elastic_launch); returns
    {rank: fn's return value}. fn must be importable (a module-level function)."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_nproc(nproc)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    return elastic_launch(config, fn)(*args)
