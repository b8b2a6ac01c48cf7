import os

import torch

# Without a GPU the Triton kernels run under the interpreter; it must be set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.helpers import tiny_model, tokenized_dataset  # noqa: E402


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def dataset():
    return tokenized_dataset()
