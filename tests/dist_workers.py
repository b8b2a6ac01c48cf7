"""Worker functions for tests/test_distributed.py (spawned processes import them by name)."""

from __future__ import annotations

import time

from fastticket.distributed import WorkerFailed, Workers


def claim_all(total: int) -> list[int]:
    """Claims indices until `total` are handed out; returns this worker's."""
    workers = Workers.from_env()
    mine = []
    while (i := workers.claim("items")) < total:
        mine.append(i)
        time.sleep(0.01 * (workers.rank + 1))  # uneven speeds: the faster worker takes more
    workers.barrier("done")
    return mine


def publish_and_wait(_: int) -> tuple[int, str]:
    """Rank 1 publishes a value after a delay; rank 0 waits for it."""
    workers = Workers.from_env()
    if workers.rank == 1:
        time.sleep(0.3)
        workers.publish("answer", "forty-two")
    return workers.rank, workers.wait_for("answer")


def fail_or_stop(_: int) -> str:
    """Rank 1 reports a failure; rank 0 keeps claiming until it sees it."""
    workers = Workers.from_env()
    if workers.rank == 1:
        workers.fail("trial seed0-winning-30: boom")
        return "failed"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            workers.claim("items")
        except WorkerFailed as exc:
            return str(exc)
        time.sleep(0.05)
    return "not stopped"


# ------------------------------------------------------------------ whole searches (tests/test_distributed_search.py)

def _search(out: str, **overrides):
    import fastticket as ft
    from tests.helpers import tiny_model
    from tests.tickets.test_search import OPTIONS, tiny_task

    return ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=out, **{**OPTIONS, "seeds": (0, 1), **overrides})


def slow_search(out: str):
    """A search whose trials each take at least 0.5 s more (time for the test to kill a worker mid-run)."""
    import sys

    runner = sys.modules["fastticket.tickets.trial_runner"]
    real = runner.fine_tune

    def slow(*args, **kwargs):
        result = real(*args, **kwargs)
        time.sleep(0.5)
        return result

    runner.fine_tune = slow
    return _search(out).rows


def disagreeing_search(out: str):
    """Worker 1 asks for other levels than worker 0."""
    workers = Workers.from_env()
    return _search(out, levels=(0.25, 0.5) if workers.rank == 0 else (0.25,)).rows


def raising_search(out: str):
    """Worker 1's first fine-tuning raises; worker 0's trials take 0.3 s more, so it is mid-trial then."""
    import sys

    runner = sys.modules["fastticket.tickets.trial_runner"]
    real = runner.fine_tune
    rank = Workers.from_env().rank

    def fine_tune(*args, **kwargs):
        if rank == 1:
            raise RuntimeError("boom")
        time.sleep(0.3)
        return real(*args, **kwargs)

    runner.fine_tune = fine_tune
    return _search(out).rows


def two_searches(out: str):
    """Two searches in one job (a script's loop): each has its own claims and barriers."""
    first = _search(out + "-a", levels=(0.5,), kinds=("winning",), seeds=(0, 1))
    second = _search(out + "-b", levels=(0.5,), kinds=("winning",), seeds=(0,))
    return [r["id"] for r in first.rows], [r["id"] for r in second.rows]
