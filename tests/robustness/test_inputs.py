"""Issue #11, items 3 and 4: local files are read exactly or refused with file, line and reason; text is cut
before tokenization; every bad argument, path, checkpoint or results file is one line (exit 2) before any
work. Each test names the defect of #11 it covers (all of them failed on the main this branch started from)."""

import json
import sys

import pytest

import fastticket as ft
from fastticket.cli import main
from fastticket.data.task import Task, tokenize_texts
from tests.helpers import tiny_model, tokenized_dataset
from tests.robustness.test_outputs import OPTIONS, tiny_task


def load_local(checkpoint, directory, **kw):
    return ft.load_task("local", tokenizer=checkpoint, data_dir=str(directory), max_length=16, text_columns="text", **kw)


def write(directory, name, text):
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text, encoding="utf-8")


def test_tsv_quotes_are_read_literally_not_swallowing_lines(checkpoint, tmp_path):
    """Defect: a TSV field with an unclosed quote swallowed the following lines."""
    write(tmp_path, "train.tsv", 'text\tlabel\n"good film\t1\nbad plot\t0\nfine actor\t1\n"awful" film\t0\n')
    write(tmp_path, "dev.tsv", "text\tlabel\ngood\t1\nbad\t0\n")
    task = load_local(checkpoint, tmp_path)
    assert task.train["text"] == ['"good film', "bad plot", "fine actor", '"awful" film']
    assert task.train["labels"] == [1, 0, 1, 0]
    write(tmp_path, "train.tsv", 'text\tlabel\n"a ""quoted"" film"\t1\nbad\t0\n')
    with pytest.raises(ValueError, match=r"train.tsv, line 2: field 'text' is quoted the CSV way"):
        load_local(checkpoint, tmp_path)
    write(tmp_path, "train.tsv", "text\tlabel\ngood\tfilm\t1\nbad\t0\n")
    with pytest.raises(ValueError, match=r"train.tsv, line 2: 3 fields, the header has 2"):
        load_local(checkpoint, tmp_path)


def test_csv_quoting_is_exact_or_refused(checkpoint, tmp_path):
    write(tmp_path, "dev.csv", "text,label\ngood,1\nbad,0\n")
    write(tmp_path, "train.csv", 'text,label\n"good, ""fine""\nfilm",1\nbad,0\n')  # RFC 4180: read exactly
    assert load_local(checkpoint, tmp_path).train["text"] == ['good, "fine"\nfilm', "bad"]
    write(tmp_path, "train.csv", 'text,label\ngood,1\n"bad plot,0\nfine,1\nawful,0\n')
    with pytest.raises(ValueError, match=r"train.csv, line \d: unexpected end of data \(a quote opened after line 2"):
        load_local(checkpoint, tmp_path)
    write(tmp_path, "train.csv", 'text,label\n"good" film,1\nbad,0\n')
    with pytest.raises(ValueError, match=r"train.csv, line 2: .*expected after"):
        load_local(checkpoint, tmp_path)


@pytest.mark.parametrize("name, text, message", [
    ("train.csv", "text,label,text\ngood,1,x\nbad,0,y\n", r"train.csv, line 1: column 'text' appears twice"),
    ("train.tsv", "text\tlabel\tlabel\ngood\t1\t0\nbad\t0\t1\n", r"train.tsv, line 1: column 'label' appears twice"),
    ("train.jsonl", '{"text": "good", "label": 1, "label": 0}\n', r"train.jsonl, line 1: key 'label' appears twice"),
])
def test_duplicate_columns_are_refused(checkpoint, tmp_path, name, text, message):
    """Defect: duplicate column names were read silently (the last one won)."""
    write(tmp_path, name, text)
    write(tmp_path, "dev.csv", "text,label\ngood,1\nbad,0\n")
    with pytest.raises(ValueError, match=message):
        load_local(checkpoint, tmp_path)


@pytest.mark.parametrize("train, dev, message", [
    # a NaN label made the task a regression
    ("good,1\nbad,0\nfine,NaN\n", "good,1\n", r"train.csv, line 4: label 'NaN' is missing \(empty or NaN\)"),
    ("good,1\nbad,\n", "good,1\n", r"train.csv, line 3: label '' is missing"),
    # a typo label added a class
    ("good,1\nbad,0\nfine,l\n", "good,1\n", r"train.csv, line 4: label 'l' is text but .*train.csv, line 2 has int label '1': mixed"),
    ("good,1\nbad,0\nfine,0.1\n", "good,1\n", r"train.csv, line 4: label '0.1' is float but .* mixed label types"),
    # ids that skip a value made phantom classes
    ("good,3\nbad,0\nfine,1\n", "good,1\n", r"class ids skip \[2\] \(ids found: \[0, 1, 3\]\)"),
    # a class present only in dev
    ("good,pos\nbad,neg\n", "good,pos\nso-so,mixed\n", r"dev.csv, line 3: class 'mixed' never occurs in the training file"),
    ("good,1\nbad,0\n", "good,2\n", r"dev.csv, line 2: class id 2 never occurs in the training file"),
])
def test_labels_are_read_exactly_or_refused(checkpoint, tmp_path, train, dev, message):
    """Defects: a NaN or typo label silently changed the task (regression, an extra class); class ids that
    skip values created phantom classes; a class present only in dev."""
    write(tmp_path, "train.csv", "text,label\n" + train)
    write(tmp_path, "dev.csv", "text,label\n" + dev)
    with pytest.raises(ValueError, match=message):
        load_local(checkpoint, tmp_path)


def test_label_names_override_gaps_and_dev_only_classes(checkpoint, tmp_path):
    write(tmp_path, "train.csv", "text,label\ngood,3\nbad,0\nfine,1\n")
    write(tmp_path, "dev.csv", "text,label\ngood,2\nbad,neutral\n")
    task = load_local(checkpoint, tmp_path, label_names=["neg", "pos", "neutral", "great"])
    assert task.num_labels == 4 and task.train["labels"] == [3, 0, 1] and task.dev["labels"] == [2, 2]


def test_long_texts_are_cut_before_tokenization(checkpoint):
    """Defect: raw text was tokenized whole before truncation (a 1 MB pair was killed at 23 GB)."""
    from fastticket.data.task import resolve_tokenizer

    tokenizer = resolve_tokenizer(checkpoint)
    longest = []

    def recording(text, *args, **kwargs):
        for t in ([text] if isinstance(text, str) else list(text)) + [p for p in args[:1] if p is not None]:
            longest.append(max([len(t)] if isinstance(t, str) else [len(x) for x in t] or [0]))
        return tokenizer(text, *args, **kwargs)

    a = "good film was very " * 150_000  # 2.9 MB
    b = "the plot is not bad " * 100_000  # 2.0 MB
    data = tokenize_texts(recording, [a, "good"], [0, 1], max_length=16, pairs=[b, "bad"])
    # the whole pair's ids (a has more tokens, so it keeps the odd one): any prefixes that compare alike
    assert data["input_ids"][0] == tokenizer(a[:4000], b[:2000], truncation=True, max_length=16)["input_ids"]
    assert max(longest) < 100_000  # never the whole text: bounded by max_length (and a fixed chunk size)
    assert data["text"][0] == a  # the dataset keeps the text as read


def test_max_length_beyond_the_models_positions_is_refused_before_training(checkpoint, task_dir, tmp_path, monkeypatch):
    """Defect: --max-length beyond the model's positions failed only after fine-tuning and scoring."""
    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)
    with pytest.raises(ValueError, match=r"max_length=64 exceeds the model's 32 positions; allowed: 2..32"):
        ft.search(checkpoint, "local", data_dir=task_dir, max_length=64, out_dir=str(tmp_path / "run"), **OPTIONS)
    with pytest.raises(ValueError, match=r"max_length=128 exceeds the model's 64 positions"):
        ft.search(tiny_model(num_labels=2), "rotten_tomatoes", max_length=128, out_dir=str(tmp_path / "run"), **OPTIONS)
    assert not (tmp_path / "run").exists()


def test_a_label_out_of_range_is_one_line_before_training(tmp_path, monkeypatch):
    """Defect: a label out of range ended in an IndexError traceback during training."""
    monkeypatch.setattr(sys.modules["fastticket.tickets.trial_runner"], "fine_tune", None)
    task = Task(name="tiny", train=tokenized_dataset(n=16, seed=1, num_labels=3),
                dev=tokenized_dataset(n=20, seed=2, num_labels=2), metric="accuracy", num_labels=2)
    with pytest.raises(ValueError, match=r"task 'tiny': train example \d+ has label 2; allowed: a class id in 0..1"):
        ft.search(tiny_model(num_labels=2), task, out_dir=str(tmp_path / "run"), **OPTIONS)
    assert not (tmp_path / "run").exists()


def test_a_missing_model_directory_is_one_line(tmp_path, capsys, monkeypatch):
    """Defect: a missing --model directory ended in a traceback."""
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--model", "no_such_model", "--out", "run", "--levels", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastticket search: error: cannot load a tokenizer from 'no_such_model'") and err.count("\n") == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "config"])
def test_corrupt_or_truncated_checkpoints_are_one_line_naming_the_file(checkpoint, tmp_path, damage):
    """Defect: corrupt or truncated weights ended in a traceback (safetensors' own error)."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    weights, config = broken / "model.safetensors", broken / "config.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\xff" * 100)
    else:
        config.write_text(config.read_text()[:50])
    file = config if damage == "config" else weights
    with pytest.raises(ValueError, match=rf"{file} (are|is) corrupt or truncated"):
        ft.load_model(str(broken))


def test_a_corrupt_results_file_in_plot_is_one_line_naming_it(tmp_path, capsys):
    """Defect: a corrupt results file made `fastticket plot` end in a traceback."""
    run = tmp_path / "run"
    ft.search(tiny_model(num_labels=2), tiny_task(), out_dir=str(run), **OPTIONS)
    results = run / "results.json"
    rows = json.loads(results.read_text())["rows"]
    results.write_text(json.dumps({"rows": [{k: v for k, v in rows[0].items() if k != "heldout_score"}]}))
    assert main(["plot", str(run)]) == 2
    assert f"results file {results} is corrupt: row 0 lacks ['heldout_score']" in capsys.readouterr().err
    results.write_text('{"rows": [')
    assert main(["plot", str(run)]) == 2
    assert f"results file {results} is corrupt or truncated" in capsys.readouterr().err


def test_fractions_errors_name_fractions(capsys):
    """Defect: `--fractions abc` was reported as `--levels`."""
    with pytest.raises(SystemExit) as exit_info:
        main(["adapt", "--fractions", "abc"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--fractions 'abc'" in err and "--levels" not in err
