"""Shared by the build_*.py scripts: write an embedded task file with a fixed, seeded dev split."""

import gzip
import io
import random


def write_split_tsv(out: str, data: list[tuple[str, int]], dev_size: int, seed: int) -> None:
    """gzip TSV `split\\tlabel\\ttext`, byte-identical on every machine (mtime 0); `dev_size` rows of a
    random.Random(seed) shuffle go to dev, the rest to train."""
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    dev = set(order[:dev_size])
    with gzip.GzipFile(out, "wb", mtime=0) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
        f.write("split\tlabel\ttext\n")
        for i, (text, label) in enumerate(data):
            f.write(f"{'dev' if i in dev else 'train'}\t{label}\t{text}\n")
