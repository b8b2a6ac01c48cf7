"""ft.search end to end on a tiny model and task (CPU): rows, super ticket, outputs, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fastticket as ft
from fastticket.data.task import Task
from fastticket.tickets.search import split_dev
from tests.helpers import tiny_model, tokenized_dataset

OPTIONS = dict(levels=(0.25, 0.5), kinds=("winning", "random"), epochs=1, batch_size=4, patience=None, progress=False)


def tiny_task():
    return Task(name="tiny", train=tokenized_dataset(n=24, seed=1, num_labels=2),
                dev=tokenized_dataset(n=30, seed=2, num_labels=2), metric="accuracy", num_labels=2)


def test_search_rows_super_ticket_and_outputs(tmp_path):
    result = ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path), **OPTIONS)
    assert [r["id"] for r in result.rows] == ["seed0-full", "seed0-winning-25", "seed0-random-25",
                                              "seed0-winning-50", "seed0-random-50"]
    full = result.rows[0]
    assert (full["heads_kept"], full["ffn_kept"], full["weights_remaining"]) == (12, 3, 100.0)
    for row in result.rows[1:]:
        level = row["level"]
        assert row["heads_kept"] == 12 - round(level * 12) and row["ffn_kept"] == 3 - int(level * 3 + 0.5)
        assert row["params"] < full["params"] and row["weights_remaining"] < 100.0
        assert set(row["selection"]) >= {"accuracy", "loss"} and row["seconds"] > 0
    assert (result.config["selection_examples"], result.config["heldout_examples"]) == (3, 27)
    winners = [r for r in result.rows if r["kind"] == "winning"]
    assert result.super_row["selection_score"] == max(r["selection_score"] for r in winners)
    assert result.super_ticket == ft.Ticket.from_dict(result.super_row["ticket"])
    assert ft.Ticket.load(tmp_path / "super_ticket.json") == result.super_ticket
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["rows"] == result.rows
    assert (tmp_path / "phase_transition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "winning" in result.table() and json.loads(result.to_json())["rows"] == result.rows


def test_search_is_deterministic_on_cpu():
    a = ft.search(tiny_model(num_labels=2), tiny_task(), **OPTIONS)
    b = ft.search(tiny_model(num_labels=2), tiny_task(), **OPTIONS)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.rows) == strip(b.rows)


def test_rewound_trial_trains_a_compact_model(monkeypatch):
    seen = []
    search_module = sys.modules["fastticket.tickets.trial_runner"]  # the attribute of that name is the function
    real = search_module.fine_tune

    def spy(model, *args, **kwargs):
        seen.append(sum(p.numel() for p in model.parameters()))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(search_module, "fine_tune", spy)
    ft.search(tiny_model(num_labels=2), tiny_task(), **{**OPTIONS, "levels": (0.5,), "kinds": ("winning",)})
    assert seen[1] < seen[0]  # the rewound model holds fewer parameters than the full one


KILLED_RUN = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import fastticket as ft
    search_module = sys.modules["fastticket.tickets.trial_runner"]
    from tests.tickets.test_search import OPTIONS, tiny_task
    from tests.helpers import tiny_model
    real = search_module.fine_tune
    def slow(*a, **k):  # leave the parent time to kill us between trials
        out = real(*a, **k)
        time.sleep(0.5)
        return out
    search_module.fine_tune = slow
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir={out!r}, **OPTIONS)
""")


def test_resume_after_kill_9_runs_only_what_is_missing(tmp_path):
    out = tmp_path / "run"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(root=root, out=str(out))])
    trials = out / "trials"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if trials.is_dir() and len([p for p in trials.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.read_bytes() for p in trials.iterdir() if p.suffix == ".json" and not p.name.startswith(".")}
    assert 2 <= len(finished) < 5, sorted(finished)

    with pytest.raises(ValueError, match="--resume"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(out), **OPTIONS)
    result = ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(out), resume=True, **OPTIONS)
    assert len(result.rows) == 5
    for name, content in finished.items():
        assert (trials / name).read_bytes() == content  # finished rows untouched, byte for byte
    fresh = ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path / "fresh"), **OPTIONS)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(result.rows) == strip(fresh.rows)
    supers = [json.loads((d / "super_ticket.json").read_text()) for d in (out, tmp_path / "fresh")]
    for s in supers:
        s["row"].pop("seconds")
    assert supers[0] == supers[1] and supers[0]["meta"]["kind"] == "winning"  # the selection's meta survives
    assert not [p for p in out.rglob(".tmp-*")]


def test_resume_with_another_configuration_is_refused_and_keeps_results(tmp_path):
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path), **{**OPTIONS, "levels": (0.5,)})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.json")}
    with pytest.raises(ValueError, match=r"different configuration \(levels: \[0.5\] -> \[0.25\]"):
        ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(tmp_path), resume=True, **{**OPTIONS, "levels": (0.25,)})
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.json")} == before


def test_split_dev_is_fixed_disjoint_and_complete():
    dev = tokenized_dataset(n=41, seed=3)
    selection, heldout = split_dev(dev)
    again, _ = split_dev(dev)
    assert (len(selection), len(heldout)) == (4, 37)
    assert list(selection["input_ids"]) == list(again["input_ids"])
    rows = sorted(map(tuple, list(selection["input_ids"]) + list(heldout["input_ids"])))
    assert rows == sorted(map(tuple, dev["input_ids"]))


def test_search_uses_the_requested_backend(monkeypatch):
    from fastticket.ops import dispatch

    used = []
    real = dispatch.resolve

    def spy(op, backend, *tensors, **kwargs):
        used.append(backend)
        return real(op, backend, *tensors, **kwargs)

    monkeypatch.setattr(dispatch, "resolve", spy)
    ft.search(tiny_model(num_labels=2), tiny_task(), **{**OPTIONS, "levels": (0.5,), "kinds": ("winning",)}, backend="torch")
    assert used and set(used) == {"torch"}


@pytest.mark.parametrize("kwargs, message", [
    ({"levels": (0.5, 0.5)}, "repeat a level"),
    ({"levels": (0.95,)}, "min_heads_per_layer"),  # 11 of 12 heads: impossible with one head per layer kept
    ({"backend": "cuda-fast"}, "backend 'cuda-fast' is unknown"),
    ({"importance_examples": 0}, "importance_examples=0"),
    ({"levels": (0.1, 1.0)}, r"sparsity=1.0 is outside the allowed range \(0, 1\)"),
    ({"levels": ()}, "levels is empty"),
    ({"kinds": ("winning", "best")}, "kind 'best' is unknown"),
    ({"seeds": (0, 0)}, "distinct"),
    ({"estimator": "taylor"}, "estimator 'taylor'"),
    ({"max_train_examples": 0}, "max_train_examples=0"),
])
def test_bad_search_arguments(kwargs, message, monkeypatch):
    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)  # fails before any training
    with pytest.raises(ValueError, match=message):
        ft.search(tiny_model(num_labels=2), tiny_task(), **{**OPTIONS, **kwargs})


def test_unknown_task_name():
    with pytest.raises(ValueError, match="task 'nope' is unknown"):
        ft.search(tiny_model(num_labels=2), "nope", **OPTIONS)
