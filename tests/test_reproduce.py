"""`fastticket reproduce glue` on tiny GLUE fixtures (the real files' layout) and a tiny BERT checkpoint:
every task searched per seed, Table 1 recomputed by hand from the rows, resume runs nothing again, and
bad input fails before any training."""

import json
import os
import re
import sys
import warnings

import pytest

from fastticket.cli import main
from fastticket.reproduce import GLUE_TABLE1, GluePlan, summarize_task, task_scores
from tests.data.glue_fixtures import FIXTURES, write_table

transformers = pytest.importorskip("transformers")
COPIES = 6  # each fixture row written this many times, so dev splits hold a selection and a held-out part


def _words():
    words = set()
    for _, files, _, _ in FIXTURES.values():
        for header, rows in files.values():
            for cells in rows + ([header.split("\t")] if header else []):
                for cell in cells:
                    words.update(re.findall(r"\w+|[^\w\s]", cell.lower()))
    return sorted(words)


def tiny_checkpoint(root):
    """A 2-layer BERT (random weights, no classifier) and a word-level vocabulary of the fixtures' texts."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _words()
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(root)
    with open(os.path.join(root, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(root, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True}, f)
    return str(root)


def tiny_glue(root):
    for name in GLUE_TABLE1:
        folder, files, _, _ = FIXTURES[name]
        for file, (header, rows) in files.items():
            width = len(header.split("\t")) if header else 0
            good = [r for r in rows if len(r) >= width]  # QQP's broken row: the reader's own tests have it
            write_table(os.path.join(root, folder, file), header, good * COPIES)
    return str(root)


ARGS = ["--seeds", "0,1", "--levels", "0.25,0.5", "--ffn-levels", "levels", "--epochs", "1", "--batch-size", "8",
        "--max-length", "64"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine threads only wait."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("reproduce")
    model, data, out = tiny_checkpoint(root / "model"), tiny_glue(root / "glue"), str(root / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["reproduce", "glue", "--model", model, "--data-dir", data, "--out", out, *ARGS])
    return code, model, data, out


def test_every_task_is_searched_and_table1_written(reproduction):
    code, _, _, out = reproduction
    assert code == 0
    table = json.loads(open(os.path.join(out, "table1.json")).read())
    assert sorted(table["tasks"]) == sorted(GLUE_TABLE1) and table["average"]["complete"]
    for task in GLUE_TABLE1:
        doc = json.loads(open(os.path.join(out, task, "results.json")).read())
        assert len(doc["super_tickets"]) == 2 and table["tasks"][task]["seeds"] == [0, 1]
        config = json.loads(open(os.path.join(out, task, "config.json")).read())
        assert (config["lr"], config["batch_size"], config["max_length"], config["levels"]) == (5e-5, 8, 64, [0.25, 0.5])
        assert config["epochs"] == 1 and config["task"] == task
    text = open(os.path.join(out, "table1.md")).read()
    assert "MNLI-m/mm Acc" in text and "| SuperT (paper, BERT-base) | 72.5 ± 0.91 | 87.5/91.1 ± 0.74" in text
    assert "86.8%" in text and "ST-DNN (ours: full model)" in text


def test_table1_recomputed_by_hand_from_the_rows(reproduction):
    _, _, _, out = reproduction
    table = json.loads(open(os.path.join(out, "table1.json")).read())
    rows = json.loads(open(os.path.join(out, "mnli", "results.json")).read())["rows"]
    full = sorted((r for r in rows if r["kind"] == "full"), key=lambda r: r["seed"])
    matched = [100 * r["heldout"]["accuracy"] for r in full]
    mismatched = [100 * r["extra"]["dev_mismatched"]["accuracy"] for r in full]
    mnli = table["tasks"]["mnli"]["full"]
    assert mnli["components"] == pytest.approx([sum(matched) / 2, sum(mismatched) / 2])
    assert mnli["scores"] == pytest.approx([(m + mm) / 2 for m, mm in zip(matched, mismatched)])
    mrpc_rows = json.loads(open(os.path.join(out, "mrpc", "results.json")).read())["rows"]
    picks = {e["seed"]: e["id"] for e in json.loads(open(os.path.join(out, "mrpc", "results.json")).read())["super_tickets"]}
    chosen = [next(r for r in mrpc_rows if r["id"] == picks[s]) for s in (0, 1)]
    assert table["tasks"]["mrpc"]["super"]["components"] == pytest.approx(
        [50 * (chosen[0]["heldout"]["accuracy"] + chosen[1]["heldout"]["accuracy"]),
         50 * (chosen[0]["heldout"]["f1"] + chosen[1]["heldout"]["f1"])])
    assert table["tasks"]["mrpc"] == summarize_task("mrpc", mrpc_rows)
    assert task_scores("stsb", {"heldout": {"pearson": 0.5, "spearman": 0.25}}) == [50.0, 25.0]
    average = table["average"]
    assert average["full"] == pytest.approx(sum(t["full"]["score_mean"] for t in table["tasks"].values()) / 8)


def test_resume_runs_nothing_again_and_other_plans_are_refused(reproduction, capsys, monkeypatch):
    _, model, data, out = reproduction
    before = open(os.path.join(out, "table1.json")).read()
    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)  # any training fails
    assert main(["reproduce", "glue", "--model", model, "--data-dir", data, "--out", out, "--resume", *ARGS]) == 0
    assert open(os.path.join(out, "table1.json")).read() == before
    capsys.readouterr()
    assert main(["reproduce", "glue", "--model", model, "--data-dir", data, "--out", out, *ARGS]) == 2
    assert "already holds a `fastticket reproduce` run; pass --resume" in capsys.readouterr().err
    assert main(["reproduce", "glue", "--model", model, "--data-dir", data, "--out", out, "--resume", *ARGS, "--seeds", "0"]) == 2
    assert "different plan (seeds: [0, 1] -> [0])" in capsys.readouterr().err


def test_a_partial_reproduction_reports_what_is_done(tmp_path):
    root = tmp_path
    model, data = tiny_checkpoint(root / "model"), tiny_glue(root / "glue")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["reproduce", "glue", "--model", model, "--data-dir", data, "--out", str(root / "out"), "--tasks", "rte",
                     "--seeds", "0", "--levels", "0.5", "--ffn-levels", "levels", "--epochs", "1", "--max-length", "64"]) == 0
    text = open(root / "out" / "table1.md").read()
    assert "(partial)" not in text  # the plan's tasks are all there
    table = json.loads(open(root / "out" / "table1.json").read())
    assert list(table["tasks"]) == ["rte"] and table["tasks"]["rte"]["p_value"] is None  # one seed: no t-test


@pytest.mark.parametrize("extra, message", [
    (["--tasks", "rte,wnli"], "allowed: a non-empty subset of"),
    (["--lr", "0"], "--lr=0.0; allowed: a positive float"),
    (["--ffn-levels", "authors"], "ffn_levels='authors' prunes 3 FFNs at level 0.25, but the model has 2 layers"),
])
def test_bad_input_fails_before_training(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)
    model, data = tiny_checkpoint(tmp_path / "model"), tiny_glue(tmp_path / "glue")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["reproduce", "glue", "--model", model, "--data-dir", data, "--out", str(tmp_path / "out"), *ARGS, *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "rte" / "trials").exists()


def test_plan_defaults_are_the_papers():
    plan = GluePlan("m", "d")
    assert plan.tasks == GLUE_TABLE1 and plan.seeds == (0, 1, 2, 3, 4) and plan.ffn_levels == "authors"
    assert plan.levels == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    rte, mnli, cola = plan.config("rte"), plan.config("mnli"), plan.config("cola")
    assert (rte.lr, rte.batch_size, rte.epochs, rte.max_length, rte.warmup, rte.clip) == (5e-5, 32, 6, 512, 0.1, 1.0)
    assert mnli.epochs == 3 and cola.epochs == 6 and cola.dropout is None  # dropout: the task's (0.05 CoLA)



@pytest.mark.slow
def test_nproc_2_equals_one_process(tmp_path, monkeypatch):
    """Two workers share every task's trials (each trial run once, both workers busy) and write the rows and
    Table 1 of one process (one torch thread everywhere, so the numbers are bit-identical)."""
    from pathlib import Path

    from tests.test_distributed_search import ROOT, TORCHRUN, assert_each_trial_ran_once, strip

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    model, data = tiny_checkpoint(tmp_path / "model"), tiny_glue(tmp_path / "glue")
    args = ["reproduce", "glue", "--model", model, "--data-dir", data, "--tasks", "rte,stsb", "--seeds", "0,1",
            "--levels", "0.5", "--ffn-levels", "levels", "--epochs", "1", "--max-length", "64"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--out", str(tmp_path / "one")]) == 0
        assert main([*args, "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    ranks = set()
    for task in ("rte", "stsb"):
        rows = [json.loads((tmp_path / d / task / "results.json").read_text())["rows"] for d in ("one", "two")]
        assert len(rows[0]) == 4 and strip(rows[0]) == strip(rows[1])
        ranks |= {r["rank"] for r in assert_each_trial_ran_once(Path(tmp_path / "two" / task), rows[1]).values()}
    assert ranks == {0, 1}
    tables = [json.loads((tmp_path / d / "table1.json").read_text()) for d in ("one", "two")]
    assert tables[0] == tables[1] and sorted(tables[1]["tasks"]) == ["rte", "stsb"]


def test_bad_nproc_is_one_line_before_any_work(tmp_path, capsys):
    args = ["reproduce", "glue", "--model", str(tmp_path), "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main([*args, "--nproc", "0"]) == 2
    assert "nproc=0; allowed: an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_directory_of_other_files_is_never_written(tmp_path, capsys, monkeypatch):
    """--out a folder of the user's files (a table1.md of their own, say) is refused before any training."""
    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)
    model, data = tiny_checkpoint(tmp_path / "model"), tiny_glue(tmp_path / "glue")
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "table1.md").write_text("my notes")
    assert main(["reproduce", "glue", "--model", model, "--data-dir", data, "--out", str(mine), *ARGS]) == 2
    assert "is not empty and has no" in capsys.readouterr().err
    assert sorted(os.listdir(mine)) == ["table1.md"] and (mine / "table1.md").read_text() == "my notes"
