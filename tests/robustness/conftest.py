import pytest

from tests.robustness.tiny import write_checkpoint, write_task


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny HF BERT checkpoint directory with its tokenizer (32 positions)."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-bert")


@pytest.fixture
def task_dir(tmp_path):
    """DIR/train.csv (24 rows) and DIR/dev.csv (30 rows): text, label."""
    return write_task(tmp_path / "data")


# A search on the tiny checkpoint that takes a few seconds: 3 trials, 1 epoch.
TINY_SEARCH = ["--levels", "0.25,0.5", "--epochs", "1", "--batch-size", "4", "--max-length", "16"]
