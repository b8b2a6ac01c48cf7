"""fastticket.rundir: ownership markers, the refusal rules of output directories, leftovers, identity diffs."""

import json
import os

import pytest

from fastticket import rundir
from fastticket.rundir import check_target, claim, config_differences


def test_check_target_rules(tmp_path):
    check_target(tmp_path / "new", "share")  # a new directory: fine, nothing written
    assert not (tmp_path / "new").exists()
    claim(tmp_path / "new", "share")
    assert rundir.owner(tmp_path / "new") == "share"
    claim(tmp_path / "new", "share")  # claimed but still empty: fine
    (tmp_path / "new" / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a `fastticket share` run; refusing to overwrite it"):
        check_target(tmp_path / "new", "share")
    with pytest.raises(ValueError, match="holds a `fastticket share` run; `fastticket search` does not write into it"):
        check_target(tmp_path / "new", "search", resume=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"is not empty and has no fastticket_run.json.*it holds a.txt"):
        check_target(tmp_path / "mine", "adapt")
    (tmp_path / "mine" / rundir.MARKER_FILE).write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="is not a fastticket marker"):
        check_target(tmp_path / "mine", "adapt")


def test_marker_lists_what_an_export_wrote(tmp_path):
    rundir.replace_dir(tmp_path / "out", lambda d: open(os.path.join(d, "w.bin"), "wb").close())
    marker = json.loads((tmp_path / "out" / rundir.MARKER_FILE).read_text())
    assert marker["command"] == "export" and marker["files"] == ["w.bin"]
    with pytest.raises(ValueError, match="holds a `fastticket export` run"):
        rundir.replace_dir(tmp_path / "out", lambda d: None, command="adapt")


def test_a_failed_write_leaves_no_temp_dir(tmp_path):
    def fail(directory):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        rundir.replace_dir(tmp_path / "out", fail)
    assert os.listdir(tmp_path) == []


def test_config_differences_name_nested_keys():
    old = {"levels": [0.5], "model": {"weights_sha256": "a", "config": {"num_layers": 6}}, "lr": 1e-4}
    new = {"levels": [0.5], "model": {"weights_sha256": "b", "config": {"num_layers": 6}}, "seed": 1}
    assert config_differences(old, new) == ["lr: 0.0001 -> '(absent)'", "model.weights_sha256: 'a' -> 'b'",
                                            "seed: '(absent)' -> 1"]


def test_an_existing_target_in_a_read_only_folder_is_refused_before_writing(tmp_path, monkeypatch):
    """replace_dir builds the new directory beside the target: a parent it may not write is refused up front
    (checked through os.access, since tests may run as root, who may write anywhere)."""
    parent = tmp_path / "readonly"
    (parent / "export").mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(parent) else real_access(p, mode))
    with pytest.raises(ValueError, match="readonly' is not writable"):
        rundir.check_replaceable(str(parent / "export"), "export")
    assert os.listdir(parent) == ["export"]


def test_the_working_directory_is_never_swapped_out(tmp_path, monkeypatch):
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    for target in (".", str(here), str(tmp_path)):
        with pytest.raises(ValueError, match="is the working directory or holds it"):
            rundir.check_replaceable(target, "export")
    assert rundir.check_replaceable("sub", "export") == str(here / "sub")
