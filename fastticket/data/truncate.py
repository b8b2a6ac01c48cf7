"""Raw text is cut before tokenization, so memory and time per example are bounded by max_length, not by the
raw length (a tokenizer given a whole 1 MB pair with truncation needs memory quadratic in it).

A long text is cut to a prefix that still holds at least max_length tokens, at the start of a whitespace run
(so no word is split and the whitespace goes with what is dropped). Tokenizers split words at whitespace
before anything else (WordPiece, byte-level BPE, SentencePiece's Metaspace), so the prefix's tokens are the
text's first tokens, and truncation keeps exactly what it keeps from the whole text. A pair is truncated
longest-first, and when both texts are long which one keeps the odd token depends on which is longer: that
is decided by counting both in bounded chunks, and the prefixes are grown until they compare the same way.
A text with no whitespace near the cut (e.g. CJK without spaces) is cut at a character there instead.
"""

from __future__ import annotations

import re

CHARS_PER_TOKEN = 16  # the first window, in characters per token of max_length (English text: 4-5)
CHUNK_CHARS = 1 << 16  # counting a whole long text goes in chunks of about this size
_BOUNDARY = re.compile(r"\S\s")
_LOOK = 4096  # how far from a cut point a whitespace boundary is looked for


def cut_texts(tokenizer, texts, pairs, max_length: int, chars_per_token: int = CHARS_PER_TOKEN):
    """(texts, pairs) where every text too long to matter whole is replaced by its prefix (see above)."""
    window = (max_length + 2) * chars_per_token
    texts = list(texts)
    pairs = None if pairs is None else list(pairs)
    for i, a in enumerate(texts):
        b = None if pairs is None else pairs[i]
        if len(a) <= window and (b is None or len(b) <= window):
            continue
        cut_a = _Prefix(tokenizer, a, window, max_length)
        if b is None:
            texts[i] = cut_a.text
            continue
        cut_b = _Prefix(tokenizer, b, window, max_length)
        if min(cut_a.count, cut_b.count) >= max_length and not (cut_a.whole and cut_b.whole):
            _order_like_whole(tokenizer, cut_a, cut_b)
        texts[i], pairs[i] = cut_a.text, cut_b.text
    return texts, pairs


class _Prefix:
    """The shortest doubling prefix of `full` with >= `need` tokens (or all of it)."""

    def __init__(self, tokenizer, full: str, window: int, need: int):
        self.tokenizer, self.full, self.window = tokenizer, full, window
        self.grow_until(lambda p: p.count >= need)

    def grow_until(self, done) -> None:
        while True:
            end = cut_point(self.full, self.window)
            self.text, self.whole = self.full[:end], end >= len(self.full)
            self.count = count_tokens(self.tokenizer, self.text)
            if self.whole or done(self):
                return
            self.window *= 2


def _order_like_whole(tokenizer, a: _Prefix, b: _Prefix) -> None:
    """Grows a prefix until `a.count > b.count` holds exactly when it holds for the whole texts."""
    a_longer = longer(tokenizer, a.full, b.full)
    if a_longer and not a.count > b.count:
        a.grow_until(lambda p: p.count > b.count)
    elif not a_longer and a.count > b.count:
        b.grow_until(lambda p: p.count >= a.count)


def cut_point(text: str, n: int) -> int:
    """An index near `n` where a whitespace run starts (the prefix text[:index] ends with a non-space);
    len(text) when the text is not longer than `n`."""
    if n >= len(text):
        return len(text)
    lo = max(0, n - _LOOK)
    found = [m.start() + 1 for m in _BOUNDARY.finditer(text, lo, n + 1)]
    if found:
        return found[-1]
    m = _BOUNDARY.search(text, n, min(len(text), n + _LOOK))
    return m.start() + 1 if m else n


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def chunks(text: str):
    """Consecutive pieces of about CHUNK_CHARS characters, split where whitespace runs start."""
    start = 0
    while start < len(text):
        end = start + cut_point(text[start:start + CHUNK_CHARS + _LOOK], CHUNK_CHARS)
        end = max(end, start + 1)
        yield text[start:end]
        start = end


def longer(tokenizer, a: str, b: str) -> bool:
    """Whether `a` has more tokens than `b`, counted in chunks side by side (stops once it is decided)."""
    counts, iters, done = [0, 0], [chunks(a), chunks(b)], [False, False]
    while True:
        for k in (0, 1):
            if not done[k]:
                piece = next(iters[k], None)
                if piece is None:
                    done[k] = True
                else:
                    counts[k] += count_tokens(tokenizer, piece)
        if all(done):
            return counts[0] > counts[1]
        if done[1] and counts[0] > counts[1]:
            return True
        if done[0] and counts[1] >= counts[0]:
            return False
