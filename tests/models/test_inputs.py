"""Bad model inputs get one ValueError naming the bad shape or name and what is allowed."""

import pytest
import torch

from fastticket.models import TicketModel
from tests.helpers import tiny_config, tiny_model


def test_labels_must_be_one_per_example():
    model = tiny_model(num_labels=1)
    ids = torch.randint(1, 50, (3, 5))
    with pytest.raises(ValueError, match=r"labels have shape \(3, 1\); allowed: \[B\]=\(3,\)"):
        model(ids, labels=torch.zeros(3, 1))  # would broadcast to a [3, 3] MSE
    assert model(ids, labels=torch.zeros(3)).loss.shape == ()


def test_token_type_ids_must_match_input_ids():
    model = tiny_model()
    ids = torch.randint(1, 50, (3, 5))
    with pytest.raises(ValueError, match=r"token_type_ids have shape \(5,\); allowed: \[B, T\]=\(3, 5\)"):
        model(ids, token_type_ids=torch.zeros(5, dtype=torch.long))


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend 'fast' is unknown; allowed: 'auto' or one of"):
        TicketModel(tiny_config(), backend="fast")
