"""GLUE (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE), SNLI and SciTail: from a local directory in
the GLUE layout, or from the Hugging Face hub through `datasets` when online.

Local layout (what GLUE's download_glue_data.py writes; every file tab-separated, no quoting):

    CoLA/{train,dev}.tsv       no header; source, label (0/1), original judgment, sentence
    SST-2/{train,dev}.tsv      sentence, label (0/1)
    MRPC/{train,dev}.tsv       Quality, #1 ID, #2 ID, #1 String, #2 String   (Quality is the 0/1 label)
    STS-B/{train,dev}.tsv      index, genre, filename, year, old_index, source1, source2, sentence1,
                               sentence2, score (0-5, float)
    QQP/{train,dev}.tsv        id, qid1, qid2, question1, question2, is_duplicate (0/1)
    MNLI/train.tsv, dev_matched.tsv, dev_mismatched.tsv
                               index, promptID, pairID, genre, ..., sentence1, sentence2, label1, [...,]
                               gold_label (entailment / neutral / contradiction)
    QNLI/{train,dev}.tsv       index, question, sentence, label (entailment / not_entailment)
    RTE/{train,dev}.tsv        index, sentence1, sentence2, label (entailment / not_entailment)
    SNLI/{train,dev}.tsv       (GLUE/MT-DNN copy) or snli_1.0/snli_1.0_{train,dev}.txt (the original
                               release): sentence1, sentence2, gold_label; '-' (no consensus) dropped
    SciTail/tsv_format/scitail_1.0_{train,dev}.tsv (the release, also SciTailV1.1/), or
                               SciTail/{train,dev}.tsv: no header; premise, hypothesis, label
                               (entails / neutral)

`data_dir` is the GLUE root (holding RTE/, SST-2/, ...) or the task's folder itself; folder names match
case-insensitively. Label ids follow GLUE's label lists (mnli/snli: entailment, neutral, contradiction;
rte/qnli: entailment, not_entailment; scitail: entails, neutral; the 0/1 tasks as written).
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from dataclasses import dataclass

_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")


@dataclass(frozen=True)
class GlueSpec:
    name: str
    folders: tuple[str, ...]  # folder names under a GLUE root, the usual one first
    train_files: tuple[str, ...]  # candidates inside the task folder, first found wins
    dev_files: tuple[str, ...]
    header: bool
    text: tuple  # column names (header) or column indices (no header): one, or a pair
    label: str | int
    file_labels: tuple[str, ...] | None  # the label strings in the file, in id order; None: a float score
    label_names: tuple[str, ...] | None
    metric: str
    metrics: tuple[str, ...]
    dropout: float
    hub: tuple[str, str | None]  # (dataset path, config)
    hub_text: tuple[str, ...]
    hub_dev: str = "validation"
    hub_labels: tuple[str, ...] | None = None  # string labels on the hub (SciTail); None: ClassLabel ids / floats
    drop: tuple[str, ...] = ()  # label values whose rows are dropped (no gold label)
    extra_dev: tuple[tuple[str, tuple[str, ...], str], ...] = ()  # (name, local files, hub split)

    @property
    def num_labels(self) -> int:
        return 1 if self.file_labels is None else len(self.file_labels)


def _glue(config, **kw):
    return dict(hub=("nyu-mll/glue", config), **kw)


_MNLI = dict(
    folders=("MNLI",), train_files=("train.tsv",), header=True, text=("sentence1", "sentence2"),
    label="gold_label", file_labels=_NLI3, label_names=_NLI3, metric="accuracy", metrics=("accuracy",),
    dropout=0.3, hub_text=("premise", "hypothesis"), drop=("-",),
)

SPECS: dict[str, GlueSpec] = {
    s.name: s
    for s in (
        GlueSpec("cola", ("CoLA",), ("train.tsv",), ("dev.tsv",), False, (3,), 1, ("0", "1"),
                 ("unacceptable", "acceptable"), "mcc", ("mcc",), 0.05, **_glue("cola", hub_text=("sentence",))),
        GlueSpec("sst2", ("SST-2", "SST2"), ("train.tsv",), ("dev.tsv",), True, ("sentence",), "label", ("0", "1"),
                 ("negative", "positive"), "accuracy", ("accuracy",), 0.1, **_glue("sst2", hub_text=("sentence",))),
        GlueSpec("mrpc", ("MRPC",), ("train.tsv",), ("dev.tsv",), True, ("#1 String", "#2 String"), "Quality", ("0", "1"),
                 ("not_equivalent", "equivalent"), "accuracy_f1", ("accuracy", "f1"), 0.1,
                 **_glue("mrpc", hub_text=("sentence1", "sentence2"))),
        GlueSpec("stsb", ("STS-B", "STSB"), ("train.tsv",), ("dev.tsv",), True, ("sentence1", "sentence2"), "score", None,
                 None, "pearson_spearman", ("pearson", "spearman"), 0.1, **_glue("stsb", hub_text=("sentence1", "sentence2"))),
        GlueSpec("qqp", ("QQP",), ("train.tsv",), ("dev.tsv",), True, ("question1", "question2"), "is_duplicate", ("0", "1"),
                 ("not_duplicate", "duplicate"), "accuracy_f1", ("accuracy", "f1"), 0.1,
                 **_glue("qqp", hub_text=("question1", "question2"))),
        GlueSpec("mnli", dev_files=("dev_matched.tsv",), hub=("nyu-mll/glue", "mnli"), hub_dev="validation_matched",
                 extra_dev=(("dev_mismatched", ("dev_mismatched.tsv",), "validation_mismatched"),), **_MNLI),
        GlueSpec("mnli-mm", dev_files=("dev_mismatched.tsv",), hub=("nyu-mll/glue", "mnli"), hub_dev="validation_mismatched",
                 extra_dev=(("dev_matched", ("dev_matched.tsv",), "validation_matched"),), **_MNLI),
        GlueSpec("qnli", ("QNLI",), ("train.tsv",), ("dev.tsv",), True, ("question", "sentence"), "label", _NLI2, _NLI2,
                 "accuracy", ("accuracy",), 0.1, **_glue("qnli", hub_text=("question", "sentence"))),
        GlueSpec("rte", ("RTE",), ("train.tsv",), ("dev.tsv",), True, ("sentence1", "sentence2"), "label", _NLI2, _NLI2,
                 "accuracy", ("accuracy",), 0.1, **_glue("rte", hub_text=("sentence1", "sentence2"))),
        GlueSpec("snli", ("SNLI", "snli_1.0"), ("train.tsv", "snli_1.0_train.txt"), ("dev.tsv", "snli_1.0_dev.txt"), True,
                 ("sentence1", "sentence2"), "gold_label", _NLI3, _NLI3, "accuracy", ("accuracy",), 0.1,
                 hub=("stanfordnlp/snli", None), hub_text=("premise", "hypothesis"), drop=("-",)),
        GlueSpec("scitail", ("SciTail", "SciTailV1.1", "SciTailV1"),
                 ("train.tsv", "tsv_format/scitail_1.0_train.tsv", "scitail_1.0_train.tsv"),
                 ("dev.tsv", "tsv_format/scitail_1.0_dev.tsv", "scitail_1.0_dev.tsv"), False, (0, 1), 2,
                 ("entails", "neutral"), ("entails", "neutral"), "accuracy", ("accuracy",), 0.1,
                 hub=("allenai/scitail", "tsv_format"), hub_text=("premise", "hypothesis"), hub_labels=("entails", "neutral")),
    )
}
GLUE_TASKS = tuple(SPECS)


@dataclass
class RawSplit:
    """Untokenized texts (and pairs, or None) and numeric labels."""

    texts: list
    pairs: list | None
    labels: list

    def head(self, n: int | None) -> "RawSplit":
        if n is None:
            return self
        return RawSplit(self.texts[:n], None if self.pairs is None else self.pairs[:n], self.labels[:n])


def read_glue(name: str, data_dir: str | None) -> dict[str, RawSplit]:
    """{"train", "dev", and extra dev splits: RawSplit} from data_dir, or the hub when data_dir is None."""
    spec = SPECS[name]
    if data_dir is None:
        return _read_hub(spec)
    return {split: _read_file(spec, path) for split, path in glue_files(name, data_dir).items()}


def glue_files(name: str, data_dir) -> dict[str, str]:
    """{"train", "dev", and extra dev splits: path} of a GLUE-layout task under data_dir, without reading them:
    a ValueError naming what is missing (a many-task run checks every task's files before any training)."""
    spec = SPECS[name]
    folder = task_folder(spec, data_dir)
    files = {"train": _find(spec, folder, spec.train_files, "training"), "dev": _find(spec, folder, spec.dev_files, "dev")}
    for extra, names, _ in spec.extra_dev:
        found = [os.path.join(folder, f) for f in names if os.path.isfile(os.path.join(folder, f))]
        if found:  # an optional second dev set (MNLI's other genre split)
            files[extra] = found[0]
    return files


def task_folder(spec: GlueSpec, data_dir) -> str:
    """The folder holding the task's files: data_dir/<Folder> (any case) under a GLUE root, or data_dir."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise ValueError(
            f"data_dir {data_dir!r} does not exist or is not a directory; expected a GLUE-layout root "
            f"(holding {spec.folders[0]}/) or the {spec.folders[0]} folder itself"
        )
    wanted = {f.lower() for f in spec.folders}
    candidates = sorted(os.path.join(data_dir, e) for e in os.listdir(data_dir) if e.lower() in wanted)
    others = {f.lower() for other in SPECS.values() for f in other.folders} - wanted
    itself = [] if os.path.basename(os.path.abspath(data_dir)).lower() in others else [data_dir]  # RTE/ is no MRPC folder
    for folder in [c for c in candidates if os.path.isdir(c)] + itself:
        if any(os.path.isfile(os.path.join(folder, f)) for f in spec.train_files):
            return folder
    if not itself:
        raise ValueError(f"no {spec.name} training file under {data_dir!r}: it is another task's folder; expected a "
                         f"GLUE-layout root (holding {spec.folders[0]}/) or the {spec.folders[0]} folder itself")
    expected = [os.path.join(data_dir, spec.folders[0], f) for f in spec.train_files]
    expected += [os.path.join(data_dir, f) for f in spec.train_files]
    raise ValueError(f"no {spec.name} training file under {data_dir!r}; expected one of {expected}")


def _find(spec, folder, files, what) -> str:
    for f in files:
        path = os.path.join(folder, f)
        if os.path.isfile(path):
            return path
    raise ValueError(f"no {spec.name} {what} file in {folder!r}; expected one of {[os.path.join(folder, f) for f in files]}")


def _read_file(spec: GlueSpec, path: str) -> RawSplit:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    texts, pairs, labels = [], [], []
    malformed, first_bad = 0, None
    label_ids = None if spec.file_labels is None else {v: i for i, v in enumerate(spec.file_labels)}
    # utf-8-sig: MRPC's files start with a byte-order mark
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if spec.header:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path} is empty; expected a header with columns {list(spec.text) + [spec.label]}")
            missing = [c for c in (*spec.text, spec.label) if c not in header]
            if missing:
                raise ValueError(
                    f"{path} has no column {missing[0]!r} (header: {header}); {spec.name} expects columns "
                    f"{list(spec.text) + [spec.label]}"
                )
            twice = [c for c in (*spec.text, spec.label) if header.count(c) > 1]
            if twice:
                raise ValueError(f"{path}, line 1: column {twice[0]!r} appears twice in the header; column names must be distinct")
            index = [header.index(c) for c in (*spec.text, spec.label)]
        else:
            index = [*spec.text, spec.label]
        width = max(index) + 1
        for line, row in enumerate(reader, start=2 if spec.header else 1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) < width:  # e.g. QQP's train.tsv has a few broken rows; GLUE's processors skip them
                malformed += 1
                first_bad = first_bad or line
                continue
            raw = row[index[-1]].strip()
            if raw in spec.drop:
                continue
            if label_ids is None:
                try:
                    label = float(raw)
                except ValueError:
                    raise ValueError(f"{path}, line {line}: label {raw!r} is not a number; {spec.name} expects a float score") from None
            else:
                if raw not in label_ids:
                    raise ValueError(
                        f"{path}, line {line}: label {raw!r} is not one of {list(spec.file_labels)} ({spec.name})"
                    )
                label = label_ids[raw]
            texts.append(row[index[0]])
            if len(spec.text) == 2:
                pairs.append(row[index[1]])
            labels.append(label)
    if malformed:
        warnings.warn(f"{path}: skipped {malformed} row(s) with fewer than {width} columns (first at line {first_bad})")
    if not labels:
        raise ValueError(f"{path} has no labeled examples; expected {spec.name} rows in the GLUE layout")
    return RawSplit(texts, pairs if len(spec.text) == 2 else None, labels)


def _read_hub(spec: GlueSpec) -> dict[str, RawSplit]:
    import datasets

    path, config = spec.hub
    where = f"{path}" + (f" (config {config!r})" if config else "")
    try:
        loaded = datasets.load_dataset(path, config)
    except Exception as e:  # offline, no such dataset in the cache, hub errors
        raise ValueError(
            f"could not load {spec.name} from the Hugging Face hub as {where}: {type(e).__name__}: {e}. "
            f"Without network access pass data_dir= a local directory in the GLUE layout "
            f"(e.g. DIR/{spec.folders[0]}/{spec.train_files[0]} and DIR/{spec.folders[0]}/{spec.dev_files[0]})"
        ) from e
    splits = {"train": _hub_split(spec, loaded, "train"), "dev": _hub_split(spec, loaded, spec.hub_dev)}
    for extra, _, split in spec.extra_dev:
        splits[extra] = _hub_split(spec, loaded, split)
    return splits


def _hub_split(spec, loaded, split) -> RawSplit:
    if split not in loaded:
        raise ValueError(f"the hub dataset {spec.hub[0]} has no split {split!r} (splits: {list(loaded)})")
    table = loaded[split]
    missing = [c for c in (*spec.hub_text, "label") if c not in table.column_names]
    if missing:
        raise ValueError(f"the hub dataset {spec.hub[0]} split {split!r} has no column {missing[0]!r} (columns: {table.column_names})")
    columns = table.to_dict()
    texts = columns[spec.hub_text[0]]
    pairs = columns[spec.hub_text[1]] if len(spec.hub_text) == 2 else None
    raw = columns["label"]
    if spec.hub_labels is not None:
        ids = {v: i for i, v in enumerate(spec.hub_labels)}
        bad = sorted({v for v in raw if v not in ids})
        if bad:
            raise ValueError(f"the hub dataset {spec.hub[0]} has labels {bad}; expected {list(spec.hub_labels)}")
        raw = [ids[v] for v in raw]
    keep = [i for i, v in enumerate(raw) if spec.file_labels is None or v >= 0]  # -1: no gold label / test rows
    return RawSplit(
        [texts[i] for i in keep],
        None if pairs is None else [pairs[i] for i in keep],
        [float(raw[i]) if spec.file_labels is None else int(raw[i]) for i in keep],
    )
