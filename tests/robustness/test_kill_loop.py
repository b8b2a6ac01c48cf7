"""Issue #11, item 6: kill -9 at random points of `fastticket search` and `fastticket export` (real
subprocesses of the CLI), then resume: the results equal an uninterrupted run's, every file is whole at every
kill, an export directory is always there (old or new), and no stray file or lock is left at the end."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEARCH = ["--task", "local", "--levels", "0.25,0.5,0.75", "--kinds", "winning,random", "--epochs", "1",
          "--batch-size", "4", "--max-length", "16"]
# The child prints "ready" once its imports are done, so kills land in the work, not in `import torch`.
# For export, whose work takes milliseconds, the steps of the directory replacement are slowed so random
# kills fall inside them.
CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import fastticket.cli, fastticket.rundir.replace as rp
if {slow}:  # the steps of rundir.replace_dir: marker of the new dir, its content, the exchange, removing the old
    def slow(f):
        def g(*a, **k):
            time.sleep(0.2)
            out = f(*a, **k)
            time.sleep(0.2)
            return out
        return g
    rp.write_marker, rp.exchange, rp.remove_tree = map(slow, (rp.write_marker, rp.exchange, rp.remove_tree))
print("ready", flush=True)
sys.exit(fastticket.cli.main(sys.argv[1:]))
"""


def start(args, slow=False):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD.format(root=ROOT, slow=slow), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc):
    line = proc.stdout.readline()
    assert line.strip() == "ready" or proc.poll() is not None, line


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return out


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def rows_without_seconds(run):
    rows = json.loads((run / "results.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def assert_whole(run):
    """Every JSON file present parses (atomic writes: whole or absent); temp files may remain until the next start."""
    for path in run.rglob("*.json"):
        if not path.name.startswith(".tmp-"):
            json.loads(path.read_text())


def stray(directory):
    names = [p for p in directory.rglob("*") if p.name.startswith(".") or p.name in ("fastticket.lock",)]
    return sorted(str(p.relative_to(directory)) for p in names)


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    from tests.robustness.tiny import write_checkpoint, write_task

    import fastticket as ft

    rng = random.Random(int(os.environ.get("FASTTICKET_KILL_SEED", "11")))
    model, data = write_checkpoint(tmp_path / "model"), write_task(tmp_path / "data")
    base = ["search", "--model", model, "--data-dir", data, *SEARCH]
    reference, run = tmp_path / "reference", tmp_path / "run"
    ref = start([*base, "--out", str(reference)])
    wait_ready(ref)
    began = time.perf_counter()
    finish(ref)
    work = time.perf_counter() - began  # the run's duration after imports

    kills, finished, resume = [], False, []
    while len(kills) < 8 and not finished:
        proc = start([*base, "--out", str(run), *resume])
        wait_ready(proc)
        delay = rng.uniform(0.0, 0.4 * work)  # small steps: the kills spread over the whole run
        time.sleep(delay)
        if proc.poll() is None:
            kill(proc)
            kills.append(round(delay, 2))
            if run.exists():
                assert_whole(run)
        else:
            finish(proc)
            finished = True
        resume = ["--resume"] if (run / "config.json").exists() else []
    if not finished:
        finish(start([*base, "--out", str(run), *resume]))
    assert rows_without_seconds(run) == rows_without_seconds(reference), kills
    supers = [json.loads((d / "super_ticket.json").read_text()) for d in (run, reference)]
    for s in supers:
        s["row"].pop("seconds")
    assert supers[0] == supers[1]
    assert stray(run) == [], stray(run)

    # export: the first one completes, then kills at random points of later ones (writes and renames slowed)
    target = tmp_path / "export"
    finish(start(["export", str(run), "--format", "hf", "--out", str(target)]))
    expected = ft.load_model(str(target)).state_dict()
    export_kills = 0
    while export_kills < max(4, 10 - len(kills)):  # >= 10 kill points in all
        proc = start(["export", str(run), "--format", "hf", "--out", str(target)], slow=True)
        wait_ready(proc)
        time.sleep(rng.uniform(0.0, 1.6))
        if proc.poll() is None:
            kill(proc)
            export_kills += 1
        else:
            finish(proc)
        # at every kill the target is a whole export: the old one or the new one (the same model here)
        state = ft.load_model(str(target)).state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    finish(start(["export", str(run), "--format", "hf", "--out", str(target)]))
    assert sorted(os.listdir(tmp_path)) == ["data", "export", "model", "reference", "run"]  # no temp or old dirs
    assert stray(target) == [] and stray(run) == []
    print(f"search killed after {kills} s of work (of {work:.1f} s), export killed {export_kills} times")
