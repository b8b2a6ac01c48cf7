"""fastticket.distributed: claims, keys, barriers and failures over torchrun's store (CPU, 2 workers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastticket.distributed import Workers, check_nproc, launch_function

from . import dist_workers

ROOT = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def importable(monkeypatch):
    """Spawned workers import tests.dist_workers: put the checkout on their path."""
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_alone_is_one_worker_with_local_state(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    w = Workers.from_env()
    assert (w.rank, w.world_size, w.distributed, w.is_main) == (0, 1, False, True)
    assert [w.claim("a"), w.claim("a"), w.claim("b"), w.claim("a")] == [0, 1, 0, 2]
    assert w.lookup("k") is None
    w.publish("k", "v")
    assert w.lookup("k") == w.wait_for("k") == "v"
    assert w.wait_for("other", ready=lambda: True) == ""
    with pytest.raises(RuntimeError, match="never be published"):
        w.wait_for("other")
    w.barrier("x")  # alone: returns at once
    assert w.failure() is None


def test_two_workers_never_claim_the_same_index(importable):
    out = launch_function(2, dist_workers.claim_all, 40)
    claimed = out[0] + out[1]
    assert sorted(claimed) == list(range(40)), "every index handed out exactly once"
    assert out[0] and out[1], "both workers got work"


def test_published_keys_reach_waiting_workers(importable):
    out = launch_function(2, dist_workers.publish_and_wait, 0)
    assert out == {0: (0, "forty-two"), 1: (1, "forty-two")}


def test_a_failure_stops_the_others_before_new_work(importable):
    out = launch_function(2, dist_workers.fail_or_stop, 0)
    assert out[1] == "failed"
    assert "worker 1 of 2: trial seed0-winning-30: boom" in out[0]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_nproc(bad):
    with pytest.raises(ValueError, match="nproc="):
        check_nproc(bad)


def test_worker_device_is_local_rank_mod_gpu_count(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    job = Workers(rank=7, world_size=8, local_rank=3, store=object())  # several workers share one GPU
    assert job.device() == job.device("cuda") == torch.device("cuda", 1)
    assert job.device("cuda:0") == torch.device("cuda", 0) and job.device("cpu") == torch.device("cpu")
    assert Workers().device("cuda") == torch.device("cuda")  # alone: as requested


def test_a_restarted_attempt_has_its_own_claims(monkeypatch):
    """torchrun --max-restarts reuses the agent's store: an attempt's claims must not hide trials from the next."""
    import torch.distributed as dist

    store = dist.HashStore()
    monkeypatch.setattr(dist, "TCPStore", lambda *a, **k: store)
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
                        "MASTER_PORT": "1", "TORCHELASTIC_RUN_ID": "job"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert Workers.from_env().claim_once("trial/seed0-full")
    assert not Workers.from_env().claim_once("trial/seed0-full")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert Workers.from_env().claim_once("trial/seed0-full")
