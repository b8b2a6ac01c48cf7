import os

import pytest

from tests.helpers import tiny_model, tokenized_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def dataset():
    return tokenized_dataset()
