"""Issue #11, items 1 and 5: no command or API call deletes or overwrites what it did not create; exports
are replaced atomically; leftovers of killed writers are cleaned; output files follow the umask.
Each test names the defect of #11 it covers (all of them failed on the main this branch started from)."""

import json
import os
import subprocess
import sys

import pytest
import torch

import fastticket as ft
from fastticket.cli import main
from fastticket.data.task import Task
from fastticket.utils import atomic_write_text
from tests.helpers import tiny_model, tokenized_dataset

MARKER = "fastticket_run.json"  # MARKER (written out: these tests must run, and fail, on old code too)


def tmp_tag(pid=None):
    from fastticket.utils import tmp_tag as tag

    return tag(pid)


def owner(directory):
    from fastticket.rundir import owner as found

    return found(directory)

OPTIONS = dict(levels=(0.5,), kinds=("winning",), epochs=1, batch_size=4, patience=None, progress=False)


def tiny_task(name="tiny"):
    return Task(name=name, train=tokenized_dataset(n=16, seed=1, num_labels=2),
                dev=tokenized_dataset(n=20, seed=2, num_labels=2), metric="accuracy", num_labels=2)


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), **OPTIONS)
    return run


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_export_refuses_a_project_folder_and_an_hf_checkpoint(tmp_path):
    """Defect: export deleted DIR whole when it held a config.json (`--out .`, an existing HF checkpoint)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"my": "settings"}')
    (project / "notes.txt").write_text("keep me")
    checkpoint = tmp_path / "checkpoint"
    ft.export(tiny_model(), checkpoint, format="hf")
    if (checkpoint / MARKER).exists():
        os.remove(checkpoint / MARKER)  # now exactly what transformers' save_pretrained writes
    for target in (project, checkpoint):
        before = snapshot(target)
        with pytest.raises(ValueError, match="did not write .*refusing to replace it"):
            ft.export(tiny_model(), target)
        assert snapshot(target) == before


def test_export_cli_refuses_the_run_itself_and_its_model(search_run, capsys):
    """Defect: `fastticket export RUN --out RUN` replaced the run directory with the export (exit 0)."""
    before = snapshot(search_run)
    assert main(["export", str(search_run), "--out", str(search_run)]) == 2
    assert "holds a `fastticket search` run; refusing to replace it" in capsys.readouterr().err
    assert main(["export", str(search_run), "--out", str(search_run / "super_ticket_model")]) == 2
    assert "is the run's own super_ticket_model/" in capsys.readouterr().err
    assert snapshot(search_run) == before


def test_export_replaces_only_its_own_earlier_export(tmp_path):
    path = tmp_path / "export"
    ft.export(tiny_model(seed=1), path)
    ft.export(tiny_model(seed=2), path, format="hf")  # an earlier export: replaced
    assert json.loads((path / MARKER).read_text())["files"] == ["config.json", "model.safetensors"]
    (path / "mine.txt").write_text("a file the user added")
    with pytest.raises(ValueError, match=r"also holds files it did not write \(mine.txt\)"):
        ft.export(tiny_model(seed=3), path)
    assert (path / "mine.txt").read_text() == "a file the user added"


def test_export_swap_leaves_no_moment_without_the_target(tmp_path, monkeypatch):
    """Defect: export's two renames (old aside, new in) left a moment with no export at the target."""
    path = tmp_path / "export"
    ft.export(tiny_model(seed=1), path)
    gaps, real_rename = [], os.rename

    def watching_rename(src, dst, *args, **kwargs):
        real_rename(src, dst, *args, **kwargs)
        if not os.path.isdir(path):
            gaps.append((src, dst))

    monkeypatch.setattr(os, "rename", watching_rename)
    ft.export(tiny_model(seed=2), path)
    assert not gaps
    assert torch.equal(ft.load_pruned(path).head.out.weight, tiny_model(seed=2).head.out.weight)
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_export_fallback_without_exchange_restores_the_old_one_on_failure(tmp_path, monkeypatch):
    from fastticket.rundir import replace

    path = tmp_path / "export"
    ft.export(tiny_model(seed=1), path)
    before = snapshot(path)
    monkeypatch.setattr(replace, "exchange", lambda a, b: False)  # an OS without RENAME_EXCHANGE
    real_rename, calls = os.rename, []

    def failing_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk gone")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_second_rename)
    with pytest.raises(OSError, match="disk gone"):
        ft.export(tiny_model(seed=2), path)
    assert snapshot(path) == before and sorted(os.listdir(tmp_path)) == ["export"]


def test_adapt_and_share_refuse_a_search_run(search_run):
    """Defect: `fastticket adapt` / `share` with --out a search run overwrote its results.json / config.json."""
    before = snapshot(search_run)
    model, task = tiny_model(num_labels=2), tiny_task()
    with pytest.raises(ValueError, match="holds a `fastticket search` run; `fastticket adapt` does not write into it"):
        ft.adapt(model, task, (1.0,), epochs=1, batch_size=4, out_dir=str(search_run), progress=False)
    ticket = ft.Ticket(torch.ones(3, 4, dtype=torch.bool), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="holds a `fastticket search` run; `fastticket share` does not write into it"):
        ft.share_tickets(model, {"tiny": task}, {"tiny": ticket}, epochs=1, batch_size=4, out_dir=str(search_run),
                         progress=False)
    assert snapshot(search_run) == before


def test_every_run_directory_records_its_command(search_run, tmp_path):
    assert owner(search_run) == "search" and owner(search_run / "super_ticket_model") == "export"
    out = tmp_path / "adapt"
    ft.adapt(tiny_model(num_labels=2), tiny_task(), (1.0,), epochs=1, batch_size=4, out_dir=str(out), progress=False)
    assert owner(out) == "adapt"
    with pytest.raises(ValueError, match="already holds a `fastticket adapt` run; refusing to overwrite it"):
        ft.adapt(tiny_model(num_labels=2), tiny_task(), (1.0,), epochs=1, batch_size=4, out_dir=str(out), progress=False)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_writer_are_cleaned_on_the_next_start(tmp_path):
    """Defect: temporary files and directories left by a kill were never cleaned."""
    run = tmp_path / "run"
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), **OPTIONS)
    dead = dead_pid()
    stale_file = run / "trials" / f".tmp-{tmp_tag(dead)}abc123-seed0-winning-50.json"
    stale_file.write_text('{"half": ')
    stale_dir = run / f".super_ticket_model.tmp-{tmp_tag(dead)}xyz"
    stale_dir.mkdir()
    (stale_dir / MARKER).write_text("{}")
    (stale_dir / "model.safetensors").write_bytes(b"\0" * 10)
    live_file = run / f".tmp-{tmp_tag()}live-results.json"  # a live writer's (ours): left alone
    live_file.write_text("{}")
    foreign = run / ".tmp-notes"  # not named by a fastticket writer: left alone
    foreign.write_text("user")
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), resume=True, **OPTIONS)
    assert not stale_file.exists() and not stale_dir.exists()
    assert live_file.exists() and foreign.exists()


def test_a_kill_between_the_fallback_renames_is_repaired(tmp_path):
    path, old = tmp_path / "export", tmp_path / f".export.old-{tmp_tag(dead_pid())}1234"
    ft.export(tiny_model(seed=1), path)
    os.rename(path, old)  # where a kill between "old aside" and "new in" leaves it
    ft.export(tiny_model(seed=2), path)  # puts the old one back first, then replaces it as usual
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_output_files_follow_the_umask(tmp_path):
    """Defect: result files were written mode 0600 whatever the umask."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        ft.export(tiny_model(), tmp_path / "export")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "export").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "export" / MARKER).stat().st_mode & 0o777 == 0o644
