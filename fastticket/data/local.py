"""A task from local files: DIR/train.{csv,tsv,json,jsonl} and DIR/dev.{...} (or validation.{...}).

CSV / TSV: a header row naming the columns (standard quoting). JSON: a list of objects, or an object of
column lists; JSON lines (.jsonl, or .json holding one object a line): one object a line.

Labels: with label_names, each value is looked up there (its position is its id); with regression=True,
floats; otherwise integers >= 0 are kept as ids, non-integer numbers make a regression task, and any
other (string) labels are mapped to ids in sorted order over train and dev, the names recorded on the Task.
"""

from __future__ import annotations

import csv
import json
import os
import sys

from .glue import RawSplit

EXTENSIONS = ("csv", "tsv", "json", "jsonl")
SPLIT_FILES = {"train": ("train",), "dev": ("dev", "validation")}


def find_split_file(data_dir: str, split: str) -> str:
    found = [
        os.path.join(data_dir, f"{stem}.{ext}")
        for stem in SPLIT_FILES[split]
        for ext in EXTENSIONS
        if os.path.isfile(os.path.join(data_dir, f"{stem}.{ext}"))
    ]
    expected = [f"{SPLIT_FILES[split][0]}.{ext}" for ext in EXTENSIONS]
    if not found:
        raise ValueError(f"no {split} file in {data_dir!r}; expected one of {expected}")
    if len(found) > 1:
        raise ValueError(f"more than one {split} file in {data_dir!r}: {found}; keep one")
    return found[0]


def read_rows(path: str) -> tuple[list[dict], list[str]]:
    """Rows (dicts) and the column names of a CSV/TSV/JSON/JSONL file."""
    ext = path.rsplit(".", 1)[-1].lower()
    if ext in ("csv", "tsv"):
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if ext == "tsv" else ",")
            rows = list(reader)
            columns = list(reader.fieldnames or [])
        return rows, columns
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    rows = None
    if ext == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # maybe JSON lines
        if isinstance(data, list):
            rows = data
        elif isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
            lengths = {len(v) for v in data.values()}
            if len(lengths) != 1:
                raise ValueError(f"{path}: the column lists have different lengths {sorted(lengths)}")
            rows = [dict(zip(data, values)) for values in zip(*data.values())]
        elif data is not None:
            raise ValueError(f"{path}: expected a list of objects, an object of column lists, or JSON lines")
    if rows is None:
        rows = []
        for line, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                try:
                    rows.append(json.loads(raw))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {line}: not valid JSON ({e.msg})") from None
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: every row must be a JSON object with named columns")
    columns = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    return rows, columns


def read_local(data_dir, text_columns, label_column="label", label_names=None, regression=None):
    """({"train", "dev": RawSplit}, label_names or None, num_labels)."""
    if data_dir is None:
        raise ValueError("task 'local' needs data_dir= a directory with train.{csv,tsv,json,jsonl} and dev.{...}")
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} does not exist or is not a directory; expected one with train.{{csv,tsv,json,jsonl}} and dev.{{...}}")
    if isinstance(text_columns, str):
        text_columns = (text_columns,)
    if text_columns is None or not 1 <= len(text_columns) <= 2 or not all(isinstance(c, str) for c in text_columns):
        raise ValueError(f"text_columns={text_columns!r}; allowed: one column name or a pair (text, text pair)")
    raw = {}
    for split in ("train", "dev"):
        path = find_split_file(data_dir, split)
        rows, columns = read_rows(path)
        if not rows:
            raise ValueError(f"{path} has no rows")
        for column in (*text_columns, label_column):
            if column not in columns:
                raise ValueError(f"{path} has no column {column!r} (columns: {columns}); expected text_columns={tuple(text_columns)} and label_column={label_column!r}")
        for i, r in enumerate(rows):
            for column in (*text_columns, label_column):
                value = r.get(column)
                if value is None or (isinstance(value, str) and column == label_column and not value.strip()):
                    raise ValueError(f"{path}, row {i + 1}: column {column!r} is empty")
        raw[split] = (path, rows)
    labels, names, num_labels = _labels({s: [r[label_column] for r in rows] for s, (_, rows) in raw.items()},
                                        {s: p for s, (p, _) in raw.items()}, label_names, regression)
    splits = {}
    for split, (_, rows) in raw.items():
        texts = [str(r[text_columns[0]]) for r in rows]
        pairs = [str(r[text_columns[1]]) for r in rows] if len(text_columns) == 2 else None
        splits[split] = RawSplit(texts, pairs, labels[split])
    return splits, names, num_labels


def _labels(values: dict, paths: dict, label_names, regression):
    if label_names is not None:
        names = tuple(str(n) for n in label_names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"label_names={label_names!r}; allowed: two or more distinct names")
        ids = {n: i for i, n in enumerate(names)}
        out = {}
        for split, vals in values.items():
            bad = [v for v in vals if _text(v) not in ids]
            if bad:
                raise ValueError(f"{paths[split]}: label {bad[0]!r} is not one of label_names {list(names)}")
            out[split] = [ids[_text(v)] for v in vals]
        return out, names, len(names)
    if regression:
        out = {}
        for split, vals in values.items():
            try:
                out[split] = [float(v) for v in vals]
            except (TypeError, ValueError):
                bad = next(v for v in vals if not _is_float(v))
                raise ValueError(f"{paths[split]}: label {bad!r} is not a number; regression needs float labels") from None
        return out, None, 1
    every = [v for vals in values.values() for v in vals]
    if all(_is_int(v) for v in every):
        ints = {s: [int(float(v)) if isinstance(v, str) else int(v) for v in vals] for s, vals in values.items()}
        low = min(min(v) for v in ints.values())
        if low < 0:
            raise ValueError(f"integer labels must be >= 0 (found {low}); pass label_names= to map them")
        top = max(max(v) for v in ints.values())
        return ints, None, max(2, top + 1)
    if regression is None and all(_is_float(v) for v in every):
        return {s: [float(v) for v in vals] for s, vals in values.items()}, None, 1
    names = tuple(sorted({_text(v) for v in every}))
    if len(names) < 2:
        raise ValueError(f"only one label value {names[0]!r} in {list(paths.values())}; a classification task needs two or more")
    ids = {n: i for i, n in enumerate(names)}
    return {s: [ids[_text(v)] for v in vals] for s, vals in values.items()}, names, len(names)


def _text(v) -> str:
    return v.strip() if isinstance(v, str) else str(v)


def _is_int(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    if isinstance(v, float):
        return v.is_integer()
    if isinstance(v, str):
        s = v.strip()
        return s.lstrip("-").isdigit()
    return False


def _is_float(v) -> bool:
    if isinstance(v, bool):
        return False
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
