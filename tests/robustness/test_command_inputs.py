"""Bad input to search, reproduce, share and adapt: one line, exit 2, before any training or write. Each test
names the defect it covers (all of them failed on the main this branch started from)."""

import json
import os
import warnings

import pytest
import torch

import fastticket as ft
from fastticket.cli import main
from fastticket.rundir import model_identity
from tests.robustness.conftest import TINY_SEARCH
from tests.robustness.tiny import write_checkpoint
from tests.test_reproduce import tiny_checkpoint, tiny_glue


def refused(capsys, argv, *needles):
    """main(argv) is exit 2 with one stderr line holding every needle."""
    capsys.readouterr()  # what the fixtures printed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if ": warning: " not in line]
    assert code == 2 and len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def test_search_refuses_a_repeated_kind(checkpoint, task_dir, tmp_path, capsys):
    """Defect: --kinds winning,winning trained every winning ticket twice and wrote two rows of one trial id."""
    out = tmp_path / "run"
    refused(capsys, ["search", "--model", checkpoint, "--task", "local", "--data-dir", task_dir, *TINY_SEARCH,
                     "--kinds", "winning,winning", "--out", str(out)], "kinds=('winning', 'winning')", "distinct")
    assert not out.exists()


def test_search_checks_its_arguments_before_reading_a_local_task(checkpoint, tmp_path, capsys):
    """Defect: --task local was read and tokenized before --seeds was checked (the data error came first)."""
    refused(capsys, ["search", "--model", checkpoint, "--task", "local", "--data-dir", str(tmp_path / "none"),
                     *TINY_SEARCH, "--seeds", "0,0", "--out", str(tmp_path / "run")], "seeds=(0, 0)")


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    return tiny_checkpoint(root / "model"), tiny_glue(root / "data")


REPRODUCE = ["--seeds", "0", "--levels", "0.5", "--ffn-levels", "levels", "--epochs", "1", "--batch-size", "8",
             "--max-length", "32"]


def reproduce(model, data, out, *extra):
    return ["reproduce", "glue", "--model", model, "--data-dir", data, "--out", str(out), *REPRODUCE, *extra]


def test_reproduce_refuses_a_repeated_task(glue, tmp_path, capsys):
    """Defect: --tasks rte,rte searched RTE twice and printed Table 1 with two RTE columns."""
    model, data = glue
    refused(capsys, reproduce(model, data, tmp_path / "out", "--tasks", "rte,rte"), "['rte', 'rte']", "each task once")
    assert not (tmp_path / "out").exists()


def test_reproduce_finds_a_missing_task_folder_before_training(glue, tmp_path, capsys):
    """Defect: a --data-dir without MRPC/ was found only after RTE's whole search had run."""
    model, data = glue
    partial = tmp_path / "partial"
    os.makedirs(partial / "RTE")
    for name in os.listdir(os.path.join(data, "RTE")):
        with open(os.path.join(data, "RTE", name), "rb") as f:
            (partial / "RTE" / name).write_bytes(f.read())
    refused(capsys, reproduce(model, str(partial), tmp_path / "out", "--tasks", "rte,mrpc"), "no mrpc training file")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--levels", "1.5"], "sparsity=1.5"),
    (["--seeds", "0,0"], "seeds=(0, 0)"),
    (["--ffn-levels", "0.1,0.2"], "ffn_levels has 2 values"),
    (["--max-length", "1000"], "exceeds the model's 128 positions"),
    (["--ffn-levels", "authors"], "ffn_levels='authors' prunes 5 FFNs at level 0.5, but the model has 2 layers"),
    (["--levels", "0.05"], "level 0.05 prunes nothing on a model of 2 layers x 4 heads"),
])
def test_reproduce_bad_plan_records_nothing(glue, tmp_path, capsys, extra, needle):
    """Defect: these were refused only after --out was claimed and the bad plan recorded in reproduce.json,
    so the corrected command was refused too (without --resume: 'already holds a run'; with it: 'a different plan')."""
    model, data = glue
    args = reproduce(model, data, tmp_path / "out", "--tasks", "rte")
    refused(capsys, [*args, *extra], needle)
    assert not (tmp_path / "out").exists()


def test_reproduce_bad_model_records_nothing(glue, tmp_path, capsys):
    """Defect: a --model without a checkpoint left a claimed --out holding the plan (see above)."""
    _, data = glue
    refused(capsys, reproduce(data, data, tmp_path / "out", "--tasks", "rte"), "has no config.json")
    assert not (tmp_path / "out").exists()


def ticket_file(path, layers=2, heads=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    ft.Ticket(torch.ones(layers, heads, dtype=torch.bool), torch.ones(layers, dtype=torch.bool)).save(str(path))


def search_run(directory, task, checkpoint):
    """What `share` reads of a search run: config.json (task, model record) and super_ticket.json."""
    ticket_file(directory / "super_ticket.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        identity = model_identity(ft.load_model(checkpoint, num_labels=2))
    config = {"task": task, "model_name": checkpoint, "model": identity}
    (directory / "config.json").write_text(json.dumps(config, default=str), encoding="utf-8")
    return str(directory)


def share(checkpoint, tickets_from, *extra):
    return ["share", "--model", checkpoint, "--tasks", "rte,mrpc", "--tickets-from", tickets_from, "--epochs", "1",
            "--max-length", "16", *extra]


def test_share_refuses_tickets_of_another_models_search(checkpoint, tmp_path, capsys):
    """Defect: a search run of another checkpoint of the same [L, H] shape gave its ticket silently."""
    other = write_checkpoint(tmp_path / "other", max_positions=64)
    runs = search_run(tmp_path / "rte", "rte", other), search_run(tmp_path / "mrpc", "mrpc", checkpoint)
    refused(capsys, share(checkpoint, ",".join(runs)), "is a search run of another model",
            "max_position_embeddings: 64 -> 32")


def test_share_takes_a_search_run_of_the_same_model_recorded_by_another_version(checkpoint, glue, tmp_path):
    """The model check compares what both configurations record: a field one fastticket version lacks is no
    difference of model."""
    runs = search_run(tmp_path / "rte", "rte", checkpoint), search_run(tmp_path / "mrpc", "mrpc", checkpoint)
    config = json.loads((tmp_path / "rte" / "config.json").read_text(encoding="utf-8"))
    del config["model"]["config"]["pooling"]
    config["model"]["config"]["a_field_of_a_newer_version"] = 1
    (tmp_path / "rte" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([*share(checkpoint, ",".join(runs)), "--data-dir", glue[1], "--batch-size", "8",
                     "--max-train-examples", "8", "--max-eval-examples", "8", "--out", str(tmp_path / "out")])
    assert code == 0 and (tmp_path / "out" / "results.json").is_file()


def test_share_refuses_two_tickets_for_one_task(checkpoint, tmp_path, capsys):
    """Defect: two sources holding a ticket for one task: one of them was taken silently."""
    ticket_file(tmp_path / "a" / "rte.json")
    ticket_file(tmp_path / "b" / "rte.json")
    ticket_file(tmp_path / "b" / "mrpc.json")
    refused(capsys, share(checkpoint, f"{tmp_path / 'a'},{tmp_path / 'b'}"), "gives task 'rte' two tickets")


def test_share_refuses_a_source_without_a_wanted_ticket(checkpoint, tmp_path, capsys):
    """Defect: a source holding no ticket for the tasks (a search run of another task) was ignored silently."""
    ticket_file(tmp_path / "a" / "rte.json")
    ticket_file(tmp_path / "a" / "mrpc.json")
    other_task = search_run(tmp_path / "sst2", "sst2", checkpoint)
    refused(capsys, share(checkpoint, f"{tmp_path / 'a'},{other_task}"), "holds no ticket",
            "a search run of task 'sst2'")


@pytest.mark.parametrize("extra, needle", [
    (["--sparsity", "5"], "--sparsity 5.0 with --tickets-from"),
    (["--importance-examples", "10"], "--importance-examples 10 with --tickets-from"),
])
def test_share_refuses_ticket_cutting_options_with_tickets_from(checkpoint, tmp_path, capsys, extra, needle):
    """Defect: --sparsity (even 5) and --importance-examples were ignored silently when --tickets-from gave
    the tickets."""
    ticket_file(tmp_path / "a" / "rte.json")
    ticket_file(tmp_path / "a" / "mrpc.json")
    refused(capsys, share(checkpoint, str(tmp_path / "a"), *extra), needle)


def test_share_refuses_an_empty_tickets_from(checkpoint, capsys):
    """Defect: --tickets-from ',' loaded the model and every task, then said 'task 'rte' has no ticket'."""
    refused(capsys, share(checkpoint, ","), "--tickets-from ',' names no directory")


def test_adapt_refuses_repeated_fractions_and_seeds(checkpoint, tmp_path, capsys):
    """Defect: --fractions 0.5,0.5 (or seeds=(0, 0)) fine-tuned the same subset twice, two identical rows."""
    refused(capsys, ["adapt", "--from", checkpoint, "--task", "rte", "--fractions", "0.5,0.5",
                     "--out", str(tmp_path / "out")], "--fractions '0.5,0.5'", "distinct")
    model = ft.load_model(checkpoint)
    task = ft.Task(name="t", train=[{"input_ids": [2, 3], "labels": 0}], dev=[{"input_ids": [2, 3], "labels": 0}],
                   metric="accuracy", num_labels=2)
    with pytest.raises(ValueError, match="distinct fractions and distinct seeds"):
        ft.adapt(model, task, (0.5,), seeds=(0, 0))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, needle", [('{"tasks": ', "is corrupt or truncated"), ("[1]", "is not a JSON object")])
def test_reproduce_resume_names_a_damaged_plan_file(glue, tmp_path, capsys, text, needle):
    """Defect: a truncated reproduce.json was 'Expecting value: line 1 column 11' (no file named); a JSON list
    was a traceback (AttributeError)."""
    from fastticket.rundir import claim

    model, data = glue
    out = tmp_path / "out"
    claim(str(out), "reproduce")
    (out / "reproduce.json").write_text(text, encoding="utf-8")
    refused(capsys, [*reproduce(model, data, out, "--tasks", "rte"), "--resume"], "reproduce.json", needle)
    assert (out / "reproduce.json").read_text(encoding="utf-8") == text


def test_reproduce_needs_mnli_mismatched_before_training(glue, tmp_path, capsys):
    """Defect: MNLI/ without dev_mismatched.tsv ran MNLI's whole search, then Table 1 was a KeyError traceback."""
    model, data = glue
    mnli = tmp_path / "glue" / "MNLI"
    mnli.mkdir(parents=True)
    for name in ("train.tsv", "dev_matched.tsv"):
        with open(os.path.join(data, "MNLI", name), "rb") as f:
            (mnli / name).write_bytes(f.read())
    refused(capsys, reproduce(model, str(tmp_path / "glue"), tmp_path / "out", "--tasks", "mnli"),
            "no mnli dev_mismatched file", "dev_mismatched.tsv")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, needles", [
    (["--neuron-multiple", "8"], ("--neuron-multiple 8 is for --granularity neuron",)),
    (["--kinds", "random", "--latency"], ("--latency times the winning tickets", "'random'")),
])
def test_search_refuses_an_option_that_would_be_ignored(checkpoint, task_dir, tmp_path, capsys, extra, needles):
    """Defect: --neuron-multiple without --granularity neuron was ignored silently; --latency with no winning
    kind ran the whole search, then printed 'No winning ticket has finished yet'."""
    out = tmp_path / "run"
    refused(capsys, ["search", "--model", checkpoint, "--task", "local", "--data-dir", task_dir, *TINY_SEARCH, *extra,
                     "--out", str(out)], *needles)
    assert not out.exists()


@pytest.mark.parametrize("command", ["search", "reproduce"])
def test_adapt_names_a_run_without_a_model(checkpoint, tmp_path, capsys, command):
    """Defect: --from a search run without a super ticket (or a reproduction) was read as a checkpoint:
    "checkpoint ... has model_type None"."""
    from fastticket.rundir import claim

    run = tmp_path / "run"
    claim(str(run), command)
    (run / "config.json").write_text(json.dumps({"task": "rte", "levels": [0.5]}), encoding="utf-8")
    refused(capsys, ["adapt", "--from", str(run), "--task", "rte", "--out", str(tmp_path / "out")],
            f"is a `fastticket {command}` run")
    assert not (tmp_path / "out").exists()


def test_share_checks_a_reproductions_task_runs(checkpoint, tmp_path, capsys):
    """Defect: --tickets-from a reproduction (its <task>/super_ticket.json) skipped the model check, and a
    <task>/ folder holding another task's search gave its ticket to <task>."""
    other = write_checkpoint(tmp_path / "other", max_positions=64)
    search_run(tmp_path / "a" / "rte", "rte", other)
    search_run(tmp_path / "a" / "mrpc", "mrpc", checkpoint)
    refused(capsys, share(checkpoint, str(tmp_path / "a")), "is a search run of another model")
    search_run(tmp_path / "b" / "rte", "mrpc", checkpoint)
    search_run(tmp_path / "b" / "mrpc", "mrpc", checkpoint)
    refused(capsys, share(checkpoint, str(tmp_path / "b")), "is a search run of task 'mrpc', not 'rte'")


def test_plot_refuses_a_results_file_with_a_trial_twice(tmp_path, capsys):
    """Defect: a results.json holding one trial id twice (what a repeated --kinds wrote) was plotted, that
    trial counted twice in every mean."""
    from fastticket.rundir import claim

    run = tmp_path / "run"
    claim(str(run), "search")
    row = {"id": "seed0-winning-50", "kind": "winning", "level": 0.5, "seed": 0, "selection_score": 0.5,
           "heldout_score": 0.5, "weights_remaining": 60.0, "heads_kept": 4, "ffn_kept": 1}
    (run / "config.json").write_text(json.dumps({"task": "rte", "metric": "accuracy"}), encoding="utf-8")
    (run / "results.json").write_text(json.dumps({"rows": [row, dict(row)]}), encoding="utf-8")
    refused(capsys, ["plot", str(run)], "is corrupt: trial 'seed0-winning-50' has 2 rows")
    assert not (run / "phase_transition.png").exists()


BIG = str(2**70)


@pytest.mark.parametrize("command", [
    ["search", "--task", "local", *TINY_SEARCH, "--seeds", BIG],
    ["adapt", "--task", "rte", "--seeds", BIG],
    ["share", "--tasks", "rte,mrpc", "--sparsity", "0.5", "--seed", BIG],
])
def test_a_seed_torch_cannot_take_is_refused_before_any_work(checkpoint, task_dir, tmp_path, capsys, command):
    """Defect: a seed beyond 64 bits was 'Overflow when unpacking long long' once the first trial ran, after
    the run directory and its config.json were written."""
    out = tmp_path / "run"
    where = ["--from", checkpoint] if command[0] == "adapt" else ["--model", checkpoint]
    refused(capsys, [*command, *where, "--data-dir", task_dir, "--out", str(out)], BIG, "[-2**63, 2**63 - 1]")
    assert not out.exists()


@pytest.mark.parametrize("options, needle", [
    (["--text-columns", "label", "--label-column", "label"], "label_column='label' (--label-column) is also a text column"),
    (["--label-column", "text"], "label_column='text' (--label-column) is also a text column"),
    (["--text-columns", "text,text"], "names one column twice"),
    (["--regression", "--label-names", "a,b"], "with regression=True (--regression)"),
])
def test_local_task_options_that_contradict_are_refused(checkpoint, task_dir, tmp_path, capsys, options, needle):
    """Defect: the label column given as a text column (the model read its own label), a pair of one column
    with itself, and --regression with --label-names (a classification silently) were all searched."""
    out = tmp_path / "run"
    refused(capsys, ["search", "--model", checkpoint, "--task", "local", "--data-dir", task_dir, *TINY_SEARCH,
                     *options, "--out", str(out)], needle)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA backend may run here")
def test_a_backend_that_cannot_run_is_refused_before_any_write(checkpoint, task_dir, glue, tmp_path, capsys):
    """Defect: --backend cuda on a machine without the CUDA extension failed in the first fine-tuning, after
    config.json was written (the corrected command then needed --resume); reproduce recorded its plan first."""
    out = tmp_path / "run"
    refused(capsys, ["search", "--model", checkpoint, "--task", "local", "--data-dir", task_dir, *TINY_SEARCH,
                     "--backend", "cuda", "--out", str(out)], "backend 'cuda' is not available")
    assert not out.exists()
    model, data = glue
    refused(capsys, [*reproduce(model, data, out, "--tasks", "rte"), "--backend", "cuda"], "backend 'cuda' is not available")
    assert not out.exists()


def test_another_tasks_folder_is_not_read_as_this_tasks(glue, tmp_path, capsys):
    """Defect: --data-dir GLUE/RTE --tasks rte,mrpc took RTE/train.tsv as MRPC's (the folder itself counts for
    any task), so RTE's whole search ran before MRPC's missing columns were found."""
    model, data = glue
    refused(capsys, reproduce(model, os.path.join(data, "RTE"), tmp_path / "out", "--tasks", "rte,mrpc"),
            "no mrpc training file", "it is another task's folder")
    assert not (tmp_path / "out").exists()
    assert len(ft.load_task("rte", tokenizer=model, data_dir=os.path.join(data, "RTE"), max_length=32).train) > 0
