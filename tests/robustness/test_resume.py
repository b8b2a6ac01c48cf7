"""Issue #11, item 2 (and the "errors arrive late" defects of a run directory): the run configuration records
the data's, the model's and the code's identity and --resume refuses any difference, naming it; one job at a
time holds a run directory (a stale lock is taken over); a bad argument leaves no run directory behind; a
corrupt trial file is one line naming it. Each test names the defect of #11 it covers."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

import fastticket as ft
from fastticket.cli import main
from tests.robustness.conftest import TINY_SEARCH
from tests.robustness.test_outputs import OPTIONS, dead_pid, tiny_task
from tests.helpers import tiny_model


def write_sst2(directory):
    """A GLUE-layout root with SST-2/{train,dev}.tsv (sentence, label)."""
    from tests.robustness.tiny import sentences

    folder = directory / "SST-2"
    folder.mkdir(parents=True)
    for split, n, seed in (("train", 24, 1), ("dev", 30, 2)):
        lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in sentences(n, seed)]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return directory


def test_resume_with_another_data_dir_is_refused(checkpoint, tmp_path):
    """Defect: --resume with a different --data-dir was accepted (one run mixing two datasets)."""
    run, data = tmp_path / "run", write_sst2(tmp_path / "glue")
    other = tmp_path / "other"
    shutil.copytree(data, other)  # the same files elsewhere: still another data directory
    options = {**OPTIONS, "max_length": 16}
    ft.search(checkpoint, "sst2", data_dir=str(data), out_dir=str(run), **options)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=rf"data.data_dir: '{os.path.realpath(data)}' -> '{os.path.realpath(other)}'"):
        ft.search(checkpoint, "sst2", data_dir=str(other), out_dir=str(run), resume=True, **options)
    with open(data / "SST-2" / "train.tsv", "a") as f:
        f.write("good film\t1\n")  # the same directory, other content
    with pytest.raises(ValueError, match=r"data.train_sha256: '[0-9a-f]{64}' -> '[0-9a-f]{64}'"):
        ft.search(checkpoint, "sst2", data_dir=str(data), out_dir=str(run), resume=True, **options)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_of_a_local_task_from_the_cli_names_the_difference_in_one_line(checkpoint, task_dir, tmp_path, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    shutil.copytree(task_dir, other)
    local = ["search", "--model", checkpoint, "--task", "local", "--out", str(run), *TINY_SEARCH]
    assert main([*local, "--data-dir", task_dir]) == 0
    capsys.readouterr()
    assert main([*local, "--data-dir", str(other), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"data.data_dir: '{os.path.realpath(task_dir)}' -> '{os.path.realpath(other)}'" in err and err.count("\n") == 1


def test_resume_compares_the_model_by_weights_not_by_path(tmp_path):
    model = tiny_model(num_labels=2)
    ft.search(model, tiny_task(), out_dir=str(tmp_path / "run"), **OPTIONS)
    moved = tiny_model(num_labels=2)
    moved.name_or_path = "/somewhere/else"  # the same weights under another path: resumes
    ft.search(moved, tiny_task(), out_dir=str(tmp_path / "run"), resume=True, **OPTIONS)
    with torch.no_grad():
        moved.layers[0].attention.q.weight.add_(1e-3)
    with pytest.raises(ValueError, match=r"different configuration \(model.weights_sha256: '[0-9a-f]{64}' -> '[0-9a-f]{64}'\)"):
        ft.search(moved, tiny_task(), out_dir=str(tmp_path / "run"), resume=True, **OPTIONS)


def test_resume_with_another_code_version_is_refused(tmp_path, monkeypatch):
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "run"), **OPTIONS)
    search_module = sys.modules["fastticket.tickets.search"]
    monkeypatch.setattr(search_module, "code_version", lambda: "9.9.9")
    with pytest.raises(ValueError, match=r"code_version: '.*' -> '9.9.9'"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "run"), resume=True, **OPTIONS)


def test_a_second_process_cannot_resume_a_directory_in_use(tmp_path):
    """Defect: nothing stopped two processes from resuming the same --out at once."""
    run = tmp_path / "run"
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), **OPTIONS)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fastticket.rundir import RunLock\n"
        f"lock = RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=rf"is in use: `fastticket search` pid {holder.pid} on host .* holds .*fastticket.lock"):
            ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), resume=True, **OPTIONS)
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match=rf"taking over the lock of a process that is gone \(`fastticket search` pid {holder.pid}"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), resume=True, **OPTIONS)
    assert not (run / "fastticket.lock").exists()  # released when search returned


def test_lock_tokens_let_a_jobs_workers_join(tmp_path):
    from fastticket.rundir import RunLock, read_lock

    with RunLock(tmp_path, command="search") as launcher:
        assert read_lock(tmp_path)["pid"] == os.getpid() and read_lock(tmp_path)["token"] == launcher.token
        with RunLock(tmp_path, token=launcher.token, join=True) as worker:
            assert not worker.owned
        assert read_lock(tmp_path) is not None  # a worker leaving does not release the job's lock
        with pytest.raises(ValueError, match="is in use"):
            RunLock(tmp_path).acquire()  # another job
        with pytest.raises(ValueError, match="is in use"):
            RunLock(tmp_path, token="someone-else", join=True).acquire()
    assert read_lock(tmp_path) is None
    with pytest.raises(ValueError, match="is not locked"):
        RunLock(tmp_path, token="t", join=True).acquire()


def test_a_lock_on_another_host_is_refused_not_taken(tmp_path):
    (tmp_path / "fastticket.lock").write_text(json.dumps(
        {"pid": dead_pid(), "host": "another-host", "started": "yesterday", "token": "x", "command": "search"}))
    with pytest.raises(ValueError, match="pid .* on host 'another-host', started yesterday"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path), resume=True, **OPTIONS)


@pytest.mark.parametrize("bad, message", [
    ({"epochs": 0}, "epochs=0"),
    ({"lr": -1.0}, "lr=-1.0"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"device": "tpu"}, "device 'tpu'"),
    ({"levels": (0.01,)}, r"level 0.01 prunes nothing on a model of 3 layers x 4 heads"),
])
def test_bad_arguments_leave_no_run_directory(tmp_path, bad, message, monkeypatch):
    """Defects: a bad --epochs/--lr/--device left a run directory that then refused both a rerun and
    --resume; a level that prunes nothing on a tiny model passed silently."""
    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)  # nothing may train
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), **{**OPTIONS, **bad})
    assert not run.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line_before_any_work(tmp_path, capsys):
    """Defect: `--device cuda` without a GPU ended in a traceback (after loading and writing)."""
    assert main(["search", "--device", "cuda", "--out", str(tmp_path / "run"), "--levels", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastticket search: error: device 'cuda' is not available") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_unwritable_out_is_refused_before_training(tmp_path, monkeypatch):
    """Defect: an unwritable --out failed only after training."""
    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"cannot create output directory .*file/run.*is not a directory"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "file" / "run"), **OPTIONS)
    readonly = tmp_path / "ro"
    readonly.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(str(readonly)))  # root ignores chmod
    with pytest.raises(ValueError, match=r"cannot write output directory .*ro/run.*is not writable"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(readonly / "run"), **OPTIONS)


def test_a_corrupt_trial_file_is_one_line_naming_it(tmp_path):
    """Defect: some errors did not name the file (a corrupt trial file surfaced as a bare JSON error)."""
    run = tmp_path / "run"
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), **OPTIONS)
    trial = run / "trials" / "seed0-winning-50.json"
    trial.write_text(trial.read_text()[:40])
    with pytest.raises(ValueError, match=r"trial file .*seed0-winning-50.json is corrupt or truncated"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), resume=True, **OPTIONS)
    trial.write_text(json.dumps({"id": "seed0-winning-50", "ticket": {"heads": [[2]]}}))
    with pytest.raises(ValueError, match=r"trial file .*seed0-winning-50.json holds no valid ticket"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), resume=True, **OPTIONS)


def test_a_crashed_search_releases_its_lock(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "run"), **OPTIONS)
    assert not (tmp_path / "run" / "fastticket.lock").exists()
    monkeypatch.undo()
    start = time.perf_counter()
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "run"), resume=True, **OPTIONS)
    assert time.perf_counter() - start < 600  # it ran (a held lock would have refused it at once)
