"""A task from local files: DIR/train.{csv,tsv,json,jsonl} and DIR/dev.{...} (or validation.{...}).

Each file is read exactly or refused with the file, the line (or JSON row) and the reason:
- CSV: a header row, then RFC 4180 quoting (a quoted field may hold commas, quotes doubled, newlines); a
  quote that is never closed, text after a closing quote, or a record with another number of fields than the
  header is refused.
- TSV: a header row; no quoting at all (the GLUE convention): a line is a record, a tab separates fields,
  quotes are ordinary characters. A field that a CSV writer quoted (wrapped in quotes, quotes doubled inside)
  or a quoted header is refused rather than read with its quotes; so is a line with another number of fields.
- JSON: a list of objects, or an object of column lists; JSON lines (.jsonl, or .json holding one object a
  line): one object a line. A key repeated within an object is refused.
Duplicate column names are refused. Text columns: given (one, or a pair), or found: `text` or `sentence`
(or `sentence1`), with `text_pair` or `sentence2` as the second text when present.

Labels: with label_names, a label is a name from it (its position is its id) or an integer id below its
length: classes may then skip ids or occur only in dev. With regression=True, finite numbers. Otherwise
the labels' type decides: integers are class ids (0..K-1, every one seen in train), decimal numbers make a
regression task, text labels are classes in sorted order (every one seen in train). A missing or NaN label,
labels of mixed types (a typo among ids), ids that skip a value, and a class that occurs only in dev are
refused, each naming the file and line.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass

from .glue import RawSplit

EXTENSIONS = ("csv", "tsv", "json", "jsonl")
SPLIT_FILES = {"train": ("train",), "dev": ("dev", "validation")}
TEXT_CANDIDATES = ("text", "sentence", "sentence1")
PAIR_CANDIDATES = ("text_pair", "sentence2")
MISSING = ("", "nan")  # label strings that mean "no label" (pandas writes NaN as an empty field)


@dataclass
class Table:
    path: str
    columns: list
    rows: list  # dicts
    where: list  # per row: "line 7" or "row 3"

    def at(self, i: int) -> str:
        return f"{self.path}, {self.where[i]}"


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
    """Rows (dicts) and the column names of a CSV/TSV/JSON/JSONL file (see the module docstring)."""
    table = read_table(path)
    return table.rows, table.columns


def read_table(path: str) -> Table:
    ext = path.rsplit(".", 1)[-1].lower()
    try:
        if ext == "csv":
            return _read_csv(path)
        if ext == "tsv":
            return _read_tsv(path)
        return _read_json(path, ext)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _header(path: str, names: list, line: int = 1) -> list:
    if not names or not any(n.strip() for n in names):
        raise ValueError(f"{path} is empty; expected a header row naming the columns")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{path}, line {line}: column {name!r} appears twice in the header; column names must be distinct")
        seen.add(name)
    return names


def _read_csv(path: str) -> Table:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows, where = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = _header(path, next(reader, []))
            for record in reader:
                if not record:
                    continue  # a blank line
                first = reader.line_num - sum(field.count("\n") for field in record)  # where the record starts
                if len(record) != len(header):
                    raise ValueError(f"{path}, line {first}: {len(record)} fields, the header has {len(header)} "
                                     f"(an unquoted comma, or a stray quote?)")
                rows.append(dict(zip(header, record)))
                where.append(f"line {first}")
        except csv.Error as exc:
            after = where[-1].split()[-1] if where else "1"
            raise ValueError(f"{path}, line {reader.line_num}: {exc} (a quote opened after line {after} is not "
                             f"closed properly)") from None
    return Table(path, header, rows, where)


def _read_tsv(path: str) -> Table:
    rows, where = [], []
    with open(path, encoding="utf-8-sig") as f:
        lines = (line.rstrip("\n") for line in f)
        header = _header(path, next(lines, "").split("\t"))
        quoted = [n for n in header if len(n) >= 2 and n.startswith('"') and n.endswith('"')]
        if quoted:
            raise ValueError(f"{path}, line 1: the header is quoted ({quoted[0]}); TSV fields are read literally "
                             f"(no quoting): write the file without quotes, or as .csv")
        for number, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise ValueError(f"{path}, line {number}: {len(fields)} fields, the header has {len(header)} (a tab or "
                                 f"newline inside a field? TSV has no quoting: use .csv for such text)")
            for name, value in zip(header, fields):
                if len(value) >= 2 and value[0] == value[-1] == '"' and '""' in value[1:-1]:
                    raise ValueError(f"{path}, line {number}: field {name!r} is quoted the CSV way ({value[:40]!r}); "
                                     f"TSV fields are read literally: write the file without quoting, or as .csv")
            rows.append(dict(zip(header, fields)))
            where.append(f"line {number}")
    return Table(path, header, rows, where)


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    dup = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if dup is not None:
        raise _DuplicateKey(dup)
    return dict(pairs)


class _DuplicateKey(ValueError):
    pass


def _read_json(path: str, ext: str) -> Table:
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if ext == "json":
        try:
            return _json_table(path, json.loads(text, object_pairs_hook=_unique_keys))
        except _DuplicateKey as exc:
            raise ValueError(f"{path}: key {exc.args[0]!r} appears twice in one object; keys must be distinct") from None
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # "Extra data": more than one document, i.e. JSON lines
                raise ValueError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    rows, where = [], []
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.strip():
            try:
                rows.append(json.loads(raw, object_pairs_hook=_unique_keys))
            except _DuplicateKey as exc:
                raise ValueError(f"{path}, line {number}: key {exc.args[0]!r} appears twice; keys must be distinct") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            where.append(f"line {number}")
    return _checked_objects(path, rows, where)


def _json_table(path: str, data) -> Table:
    if isinstance(data, list):
        return _checked_objects(path, data, [f"row {i + 1}" for i in range(len(data))])
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise ValueError(f"{path}: the column lists have different lengths {sorted(lengths)}")
        rows = [dict(zip(data, values)) for values in zip(*data.values())]
        return Table(path, list(data), rows, [f"row {i + 1}" for i in range(len(rows))])
    if isinstance(data, dict):  # a single object: JSON lines with one line
        return _checked_objects(path, [data], ["row 1"])
    raise ValueError(f"{path}: expected a list of objects, an object of column lists, or JSON lines")


def _checked_objects(path: str, rows: list, where: list) -> Table:
    columns = []
    for row, at in zip(rows, where):
        if not isinstance(row, dict):
            raise ValueError(f"{path}, {at}: {type(row).__name__} instead of an object with named columns")
        columns.extend(c for c in row if c not in columns)
    return Table(path, columns, rows, where)


def detect_text_columns(columns, path: str) -> tuple:
    """(text,) or (text, pair) from the column names, or one ValueError saying what to pass."""
    found = [c for c in TEXT_CANDIDATES if c in columns]
    pair = [c for c in PAIR_CANDIDATES if c in columns]
    if len(found) != 1 or len(pair) > 1:
        what = f"several candidates {found + pair}" if len(found) > 1 or len(pair) > 1 else "none of " + "/".join(TEXT_CANDIDATES)
        raise ValueError(f"{path} has columns {list(columns)}: cannot tell the text columns ({what}); name them with "
                         f"text_columns= (--text-columns A or A,B)")
    return (found[0], pair[0]) if pair else (found[0],)


def read_local(data_dir, text_columns=None, label_column="label", label_names=None, regression=None):
    """({"train", "dev": RawSplit}, label_names or None, num_labels)."""
    if data_dir is None:
        raise ValueError("task 'local' needs data_dir= a directory with train.{csv,tsv,json,jsonl} and dev.{...}")
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} does not exist or is not a directory; expected one with train.{{csv,tsv,json,jsonl}} and dev.{{...}}")
    if isinstance(text_columns, str):
        text_columns = (text_columns,)
    if text_columns is not None and (not 1 <= len(text_columns) <= 2 or not all(isinstance(c, str) and c for c in text_columns)):
        raise ValueError(f"text_columns={text_columns!r}; allowed: one column name or a pair (text, text pair)")
    tables = {split: read_table(find_split_file(data_dir, split)) for split in ("train", "dev")}
    if text_columns is None:
        text_columns = detect_text_columns(tables["train"].columns, tables["train"].path)
    _check_column_roles(tuple(text_columns), label_column, label_names, regression)
    for table in tables.values():
        if not table.rows:
            raise ValueError(f"{table.path} has no rows")
        for column in (*text_columns, label_column):
            if column not in table.columns:
                raise ValueError(f"{table.path} has no column {column!r} (columns: {table.columns}); expected "
                                 f"text_columns={tuple(text_columns)} and label_column={label_column!r}")
        _check_texts(table, text_columns)
    labels, names, num_labels = _labels(tables, label_column, label_names, regression)
    splits = {}
    for split, table in tables.items():
        texts = [r[text_columns[0]] for r in table.rows]
        pairs = [r[text_columns[1]] for r in table.rows] if len(text_columns) == 2 else None
        splits[split] = RawSplit(texts, pairs, labels[split])
    return splits, names, num_labels


def _check_texts(table: Table, text_columns) -> None:
    for i, row in enumerate(table.rows):
        for column in text_columns:
            if not isinstance(row.get(column), str):
                found = "no value" if row.get(column) is None else f"{type(row[column]).__name__} {row[column]!r}"
                raise ValueError(f"{table.at(i)}: column {column!r} has {found}; a text is expected")


def _check_column_roles(text_columns: tuple, label_column, label_names, regression) -> None:
    """Options that contradict each other are refused, not resolved silently: the label fed to the model as
    text (it learns to copy it), a pair of one column with itself, class names for a regression."""
    if label_column in text_columns:
        raise ValueError(f"label_column={label_column!r} (--label-column) is also a text column (text_columns="
                         f"{text_columns}); allowed: a label column that is not model input")
    if len(set(text_columns)) != len(text_columns):
        raise ValueError(f"text_columns={text_columns} (--text-columns) names one column twice; allowed: one column, "
                         f"or a pair of two different columns")
    if label_names is not None and regression:
        raise ValueError(f"label_names={list(label_names)} (--label-names) with regression=True (--regression); "
                         f"allowed: one of them (class names, or numeric labels of a regression)")


def _labels(tables: dict, column: str, label_names, regression):
    values = {s: [(t.at(i), r.get(column)) for i, r in enumerate(t.rows)] for s, t in tables.items()}
    for at, v in (item for vals in values.values() for item in vals):
        if _kind(v) == "missing":
            raise ValueError(f"{at}: label {v!r} is missing (empty or NaN); every example needs a label")
    if label_names is not None:
        return _named_labels(values, label_names)
    if regression:
        for at, v in (item for vals in values.values() for item in vals):
            if _kind(v) not in ("int", "float"):
                raise ValueError(f"{at}: label {v!r} is not a number; regression needs numeric labels")
        return {s: [float(v) for _, v in vals] for s, vals in values.items()}, None, 1
    first = {}
    for at, v in (item for vals in values.values() for item in vals):
        first.setdefault(_kind(v), (at, v))
    if len(first) > 1:
        (at0, v0), (at1, v1) = sorted(first.values(), key=lambda item: _order(item[0], tables))[:2]
        raise ValueError(f"{at1}: label {v1!r} is {_kind(v1)} but {at0} has {_kind(v0)} label {v0!r}: mixed label types "
                         f"(a typo?); pass label_names= (--label-names) to list the classes, or regression=True (--regression)")
    kind = next(iter(first))
    if kind == "float":
        if regression is False:
            at, v = first["float"]
            raise ValueError(f"{at}: label {v!r} is a decimal number but regression=False; classes need integer or text labels")
        return {s: [float(v) for _, v in vals] for s, vals in values.items()}, None, 1
    if kind == "int":
        return _id_labels(values)
    return _class_labels(values)


def _order(at: str, tables: dict):
    path, _, place = at.rpartition(", ")
    split = 0 if path == tables["train"].path else 1
    return split, int(place.split()[-1])


def _kind(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip().lower() in MISSING):
        return "missing"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float" if math.isfinite(v) else "text"
    if isinstance(v, str):
        s = v.strip()
        if s.lstrip("+-").isdigit():
            return "int"
        try:
            return "float" if math.isfinite(float(s)) else "text"
        except ValueError:
            return "text"
    return "text"


def _text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v.strip() if isinstance(v, str) else str(v)


def _named_labels(values: dict, label_names):
    names = tuple(str(n) for n in label_names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"label_names={list(label_names)!r}; allowed: two or more distinct names")
    ids = {n: i for i, n in enumerate(names)}
    out = {}
    for split, vals in values.items():
        out[split] = []
        for at, v in vals:
            if _text(v) in ids:
                out[split].append(ids[_text(v)])
            elif _kind(v) == "int" and 0 <= int(_text(v)) < len(names):
                out[split].append(int(_text(v)))
            else:
                raise ValueError(f"{at}: label {v!r} is not one of label_names {list(names)} (nor an id below {len(names)})")
    return out, names, len(names)


def _id_labels(values: dict):
    ids = {s: [(at, int(_text(v))) for at, v in vals] for s, vals in values.items()}
    for at, i in (item for vals in ids.values() for item in vals):
        if i < 0:
            raise ValueError(f"{at}: class id {i} is negative; ids are 0..K-1 (or pass label_names= / --label-names)")
    seen = sorted({i for vals in ids.values() for _, i in vals})
    gaps = sorted(set(range(seen[-1] + 1)) - set(seen))
    if gaps:
        raise ValueError(f"class ids skip {gaps[:5]} (ids found: {seen[:10]}) in {_paths(values)}: ids must be 0..K-1 "
                         f"with every class present, or pass label_names= (--label-names) naming all K classes")
    _check_train_has(ids, "class id")
    if len(seen) < 2:
        raise ValueError(f"only one class ({seen[0]}) in {_paths(values)}; a classification task needs two or more")
    return {s: [i for _, i in vals] for s, vals in ids.items()}, None, len(seen)


def _class_labels(values: dict):
    texts = {s: [(at, _text(v)) for at, v in vals] for s, vals in values.items()}
    _check_train_has(texts, "class")
    names = tuple(sorted({t for _, t in texts["train"]}))
    if len(names) < 2:
        raise ValueError(f"only one label value {names[0]!r} in {_paths(values)}; a classification task needs two or more")
    ids = {n: i for i, n in enumerate(names)}
    return {s: [ids[t] for _, t in vals] for s, vals in texts.items()}, names, len(names)


def _check_train_has(labels: dict, what: str) -> None:
    train = {v for _, v in labels["train"]}
    for at, v in labels["dev"]:
        if v not in train:
            raise ValueError(f"{at}: {what} {v!r} never occurs in the training file, so no model can learn it; "
                             f"pass label_names= (--label-names) naming every class to keep it")


def _paths(values: dict) -> str:
    return " and ".join(sorted({at.rpartition(", ")[0] for vals in values.values() for at, _ in vals[:1]}))
