"""A search on several workers (#13): equal to one process, every trial run once, SIGKILL then resume, workers
that disagree, a raising worker, bad input. CPU, gloo store, 2 workers; one torch thread everywhere so that
the workers' metrics are bit-identical to the reference run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fastticket as ft
from fastticket.cli import main
from fastticket.distributed import JobFailed, launch_function
from tests import dist_workers
from tests.helpers import tiny_model
from tests.tickets.test_search import OPTIONS, tiny_task

ROOT = str(Path(__file__).resolve().parents[1])
SEEDS = {**OPTIONS, "seeds": (0, 1)}  # 10 trials: two full trials, so both workers start at once
TORCHRUN = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def one_thread(monkeypatch):
    """Workers and the reference run with one torch thread; spawned workers import the tests package."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def trial_files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (run / "trials").iterdir()
            if p.suffix in (".json", ".worker") and not p.name.startswith(".")}


def worker_records(run: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (run / "trials").glob("*.worker")}


def assert_each_trial_ran_once(run: Path, rows) -> dict[str, dict]:
    """Every finished trial has exactly one worker record (a second run of a trial fails to write its own)."""
    records = worker_records(run)
    assert sorted(records) == sorted(r["id"] for r in rows)
    return records


def assert_clean(run: Path):
    assert not [p for p in run.rglob("*") if p.name.startswith(".tmp-")]
    assert not (run / "fastticket.lock").exists()


def super_ticket(run: Path) -> dict:
    doc = json.loads((run / "super_ticket.json").read_text())
    doc["row"].pop("seconds")
    return doc


@pytest.mark.slow
def test_nproc_2_and_torchrun_equal_one_process(tmp_path, one_thread, capfd):
    """`fastticket search --nproc 2` and `torchrun --nproc-per-node 2 -m fastticket search` write what the
    single-process run writes: rows, super tickets, model."""
    from tests.robustness.tiny import write_checkpoint, write_task

    model, data = write_checkpoint(tmp_path / "model"), write_task(tmp_path / "data")
    base = ["search", "--model", model, "--task", "local", "--data-dir", data, "--levels", "0.25,0.5", "--kinds",
            "winning,random", "--seeds", "0,1", "--epochs", "1", "--batch-size", "4", "--max-length", "16"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*base, "--out", str(one)]) == 0
    assert main([*base, "--nproc", "2", "--out", str(two)]) == 0
    rows = [json.loads((d / "results.json").read_text())["rows"] for d in (one, two)]
    assert len(rows[0]) == 10 and strip(rows[0]) == strip(rows[1])
    assert super_ticket(one) == super_ticket(two)
    assert json.loads((one / "config.json").read_text()) == json.loads((two / "config.json").read_text())
    weights = [ft.load_pruned(str(d / "super_ticket_model")).state_dict() for d in (one, two)]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    records = assert_each_trial_ran_once(two, rows[1])
    assert {r["rank"] for r in records.values()} == {0, 1} and len({r["job"] for r in records.values()}) == 1
    assert_clean(two)
    assert capfd.readouterr().out.count("super tickets per seed") == 2  # worker 0 reports, worker 1 does not

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fastticket"]
    job = subprocess.run([*torchrun, *base, "--out", str(tmp_path / "torchrun")], capture_output=True, text=True,
                         timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert strip(json.loads((tmp_path / "torchrun" / "results.json").read_text())["rows"]) == strip(rows[0])
    assert super_ticket(tmp_path / "torchrun") == super_ticket(one)
    assert {r["rank"] for r in worker_records(tmp_path / "torchrun").values()} == {0, 1}
    assert_clean(tmp_path / "torchrun")


KILLED_JOB = """
import sys
sys.path.insert(0, {root!r})
from fastticket.distributed import launch_function
from tests import dist_workers
if __name__ == "__main__":
    launch_function(2, dist_workers.slow_search, {out!r})
"""


def kill_a_worker_mid_run(run: Path) -> subprocess.CompletedProcess:
    """Starts a 2-worker job (torchrun-style: worker 0 takes the lock), SIGKILLs worker 1 once 3 trials are
    finished and worker 1 has finished one, returns the ended job."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_JOB.format(root=ROOT, out=str(run))], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and proc.poll() is None and victim is None:
        time.sleep(0.05)
        if not (run / "trials").is_dir():
            continue
        records = [r for name, r in worker_records(run).items() if (run / "trials" / f"{name}.json").exists()]
        if len(records) >= 3 and any(r["rank"] == 1 for r in records):
            victim = next(r["pid"] for r in records if r["rank"] == 1)
    assert victim is not None, "the job ended (or stalled) before a worker could be killed"
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


@pytest.mark.slow
def test_sigkill_of_a_worker_then_resume_finishes_only_what_is_missing(tmp_path, one_thread):
    run = tmp_path / "run"
    job = kill_a_worker_mid_run(run)
    assert job.returncode != 0 and "worker 1 of 2 (pid" in job.stderr and "killed by SIGKILL" in job.stderr, job.stderr
    finished = {n: b for n, b in trial_files(run).items() if (run / "trials" / (n.rsplit(".", 1)[0] + ".json")).exists()}
    assert 3 <= len([n for n in finished if n.endswith(".json")]) < 10, sorted(finished)

    with pytest.raises(ValueError, match="--resume"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), workers=2, **SEEDS)
    resumed = ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), workers=2, resume=True, **SEEDS)
    reference = ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "ref"), **SEEDS)
    assert strip(resumed.rows) == strip(reference.rows) and len(resumed.rows) == 10
    after = trial_files(run)
    for name, content in finished.items():
        assert after[name] == content, f"{name} changed on resume"
    assert super_ticket(run) == super_ticket(tmp_path / "ref")
    records = assert_each_trial_ran_once(run, resumed.rows)
    assert len({r["job"] for r in records.values()}) == 2  # the killed job's trials and the resumed job's
    assert_clean(run)


def test_workers_that_disagree_on_the_configuration_are_refused(tmp_path, one_thread):
    run = tmp_path / "run"
    with pytest.raises(JobFailed, match=r"disagree on the configuration: worker 1 has config\.levels: \[0\.25, 0\.5\] "
                                        r"-> \[0\.25\]") as failed:
        launch_function(2, dist_workers.disagreeing_search, str(run))
    assert failed.value.user_error and failed.value.exitcode == 2
    assert not (run / "config.json").exists() and not (run / "trials").exists()


def test_a_raising_worker_reports_its_trial_and_the_others_stop(tmp_path, one_thread):
    run = tmp_path / "run"
    with pytest.raises(JobFailed, match=r"worker 1 of 2: TrialFailed: trial seed\d-full: RuntimeError: boom") as failed:
        launch_function(2, dist_workers.raising_search, str(run))
    assert not failed.value.user_error and failed.value.rank == 1
    for path in (run / "trials").glob("*.json"):
        json.loads(path.read_text())  # whatever finished is whole
    assert not (run / "results.json").exists() or json.loads((run / "results.json").read_text())["rows"] is not None
    assert not (run / "super_ticket.json").exists()  # nothing settled
    assert_clean(run)


@pytest.mark.parametrize("argv, message", [
    (["--nproc", "0"], "nproc=0; allowed: an integer >= 1"),
    (["--nproc", "-2"], "nproc=-2; allowed: an integer >= 1"),
    (["--nproc", "2", "--levels", "0.5,0.5"], "repeat a level"),  # search's checks, before any worker starts
    (["--nproc", "2", "--kinds", "best"], "kind 'best' is unknown"),
    (["--nproc", "2", "--backend", "fast"], "backend 'fast' is unknown"),
])
def test_bad_nproc_is_one_line_before_any_work(tmp_path, argv, message, capsys):
    out = tmp_path / "run"
    assert main(["search", "--model", "no_such_model", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_nproc_inside_torchrun_and_torchrun_without_out_are_refused(tmp_path, monkeypatch, capsys):
    for name, value in zip(TORCHRUN, ("2", "0", "0", "localhost", "1")):
        monkeypatch.setenv(name, value)
    assert main(["search", "--nproc", "2", "--out", str(tmp_path / "run")]) == 2
    assert "--nproc 2 inside a torchrun job" in capsys.readouterr().err
    assert main(["search"]) == 2
    assert "under torchrun --out is needed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_search_workers_bad_input_before_any_work(tmp_path, monkeypatch):
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)
    with pytest.raises(ValueError, match="nproc=0"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "a"), workers=0, **OPTIONS)
    with pytest.raises(ValueError, match="workers=2 needs out_dir"):
        ft.search(tiny_model(num_labels=2), tiny_task(), workers=2, **OPTIONS)
    with pytest.raises(ValueError, match="repeat a level"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "b"), workers=2,
                  **{**OPTIONS, "levels": (0.5, 0.5)})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_two_searches_in_one_job_each_run_all_their_trials(tmp_path, one_thread):
    out = launch_function(2, dist_workers.two_searches, str(tmp_path / "run"))
    expected = [f"seed{s}-{k}" for s in (0, 1) for k in ("full", "winning-50")]
    assert out[0] == out[1] == (expected, expected[:2])
    for name, ids in (("run-a", expected), ("run-b", expected[:2])):
        assert sorted(worker_records(tmp_path / name)) == sorted(ids)


@pytest.mark.slow
def test_bad_input_the_workers_find_is_one_line_and_loses_nothing(tmp_path, one_thread, capfd):
    """Found once the workers loaded the model: a level that prunes nothing (the launcher removes the directory
    it had claimed: nothing else was written), a run directory of another configuration (kept as it was).
    Either is the workers' error printed once by the launcher, exit 2."""
    from tests.robustness.tiny import write_checkpoint, write_task

    model, data = write_checkpoint(tmp_path / "model"), write_task(tmp_path / "data")
    base = ["search", "--model", model, "--task", "local", "--data-dir", data, "--epochs", "1", "--max-length", "16"]
    capfd.readouterr()
    out = tmp_path / "run"
    assert main([*base, "--levels", "0.01", "--nproc", "2", "--out", str(out)]) == 2
    err = capfd.readouterr().err
    assert err.startswith("fastticket search: error: level 0.01 prunes nothing") and err.count("\n") == 1, err
    assert not out.exists()

    assert main([*base, "--levels", "0.5", "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capfd.readouterr()
    assert main([*base, "--levels", "0.25", "--nproc", "2", "--resume", "--out", str(out)]) == 2
    err = capfd.readouterr().err
    assert err == (f"fastticket search: error: cannot resume {str(out)!r} with a different configuration "
                   f"(levels: [0.5] -> [0.25])\n"), err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_new_job_removes_what_killed_trials_left_half_written(tmp_path):
    """A worker record or importance scores without their trial's row: the trial was killed between the two
    writes and runs again; what finished stays."""
    from fastticket.rundir import lock_scope
    from fastticket.tickets.store import ResultStore

    run = tmp_path / "run"
    with lock_scope():
        ResultStore(str(run)).start({"a": 1}, resume=False)
    trials = run / "trials"
    (trials / "seed1-full.json").write_text(json.dumps({"id": "seed1-full", "kind": "full", "seed": 1}))
    for name in ("trials/seed1-full.worker", "importance-seed1.json", "trials/seed0-full.worker", "importance-seed0.json"):
        (run / name).write_text("{}")
    with lock_scope():
        ResultStore(str(run)).start({"a": 1}, resume=True)
    assert sorted(p.name for p in trials.iterdir()) == ["seed1-full.json", "seed1-full.worker"]
    assert (run / "importance-seed1.json").exists() and not (run / "importance-seed0.json").exists()


class OtherWorkerHas(dist_workers.Workers):
    """A worker of a 2-worker job whose partner already claimed `taken` (no store: claims are local)."""

    def __init__(self, taken):
        super().__init__(rank=1, world_size=2)
        self.taken, self.checks = set(taken), 0

    @property
    def distributed(self):
        return True

    def claim_once(self, name):
        return name.removeprefix("trial/") not in self.taken

    def check(self):
        self.checks += 1


def test_trial_queue_full_trials_first_tickets_once_scored_never_a_claimed_trial():
    from fastticket.tickets.sweep import TrialQueue
    from fastticket.tickets.trials import plan_trials

    trials = plan_trials((0.25, 0.5), ("winning",), (0, 1, 2))
    scored, got = set(), []
    for t in TrialQueue(dist_workers.Workers(), trials, {"seed1-full": {}, "seed2-winning-25": {}}, scored.__contains__):
        got.append(t.id)
        scored |= {t.seed} if t.kind == "full" else set()
    assert got == ["seed0-full", "seed2-full", "seed0-winning-25", "seed0-winning-50", "seed1-winning-25",
                   "seed1-winning-50", "seed2-winning-50"]  # seed 1 scored in an earlier job

    worker = OtherWorkerHas({"seed0-full", "seed1-winning-25"})
    scored, got = set(), []
    # the other worker's full trial of seed 0 finishes while this one waits
    ready = lambda seed: seed in scored or (seed == 0 and worker.checks >= 1)  # noqa: E731
    for t in TrialQueue(worker, trials[:6], {}, ready):  # seeds 0 and 1
        got.append(t.id)
        scored |= {t.seed} if t.kind == "full" else set()
    assert got == ["seed1-full", "seed1-winning-50", "seed0-winning-25", "seed0-winning-50"]
    assert worker.checks == 1  # it waited once, checking for a failed worker
