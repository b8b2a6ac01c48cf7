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
