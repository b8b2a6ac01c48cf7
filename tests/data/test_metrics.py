"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from fastticket.data.metrics import compute_metrics, primary_metric, reported_metrics


def test_accuracy_f1_mcc_by_hand():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 1, 0, 0, 0, 1, 1, 0]  # TP 3, FN 1, TN 3, FP 1
    m = compute_metrics(preds, labels, "accuracy_f1")
    assert list(m) == ["accuracy", "f1", "accuracy_f1"]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # 2TP / (2TP + FP + FN) = 0.75
    assert m["accuracy_f1"] == pytest.approx(0.75)
    # MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (9 − 1) / 16
    assert compute_metrics(preds, labels, "mcc") == {"mcc": pytest.approx(0.5)}
    # F1 where the positive class is rarer: TP 1, FP 2, FN 1 -> 2/(2+2+1)
    assert compute_metrics([1, 1, 1, 0, 0], [1, 0, 0, 1, 0], "f1")["f1"] == pytest.approx(0.4)


def test_logits_are_argmaxed_and_tensors_accepted():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 5.0], [9.0, 0.0, 0.0]])
    assert compute_metrics(logits, torch.tensor([0, 1, 1, 0]))["accuracy"] == pytest.approx(0.75)
    assert compute_metrics(np.array([0, 2]), np.array([0, 2]))["accuracy"] == 1.0


def test_pearson_spearman_by_hand():
    preds = torch.tensor([[1.0], [2.0], [3.0], [4.0]])  # [N, 1] regression outputs
    labels = [1.0, 3.0, 2.0, 4.0]
    m = compute_metrics(preds, labels, "pearson_spearman")
    # x̄ = ȳ = 2.5, deviations x: -1.5 -.5 .5 1.5, y: -1.5 .5 -.5 1.5 -> Σxy = 2.25 - .25 - .25 + 2.25 = 4, Σx² = Σy² = 5
    assert m["pearson"] == pytest.approx(0.8)
    # ranks equal the values here, so Spearman = Pearson of the ranks = 0.8
    assert m["spearman"] == pytest.approx(0.8)
    assert m["pearson_spearman"] == pytest.approx(0.8)
    # a monotone but non-linear relation: Spearman 1, Pearson below 1
    m = compute_metrics([1.0, 2.0, 3.0, 10.0], [1.0, 2.0, 3.0, 4.0], "pearson_spearman")
    assert m["spearman"] == pytest.approx(1.0) and m["pearson"] < 0.95
    # undefined correlation (constant predictions) scores 0, never NaN
    assert compute_metrics([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "pearson_spearman") == {"pearson": 0.0, "spearman": 0.0, "pearson_spearman": 0.0}
    assert compute_metrics([0, 0, 0], [0, 1, 1], "mcc")["mcc"] == 0.0


def test_primary_and_reported_for_a_task():
    class T:
        metric, metrics = "accuracy_f1", ("accuracy", "f1")

    assert primary_metric(T()) == "accuracy_f1" and reported_metrics(T()) == ("accuracy", "f1", "accuracy_f1")
    assert reported_metrics("mcc") == ("mcc",)


def test_bad_metric_inputs():
    with pytest.raises(ValueError, match=r"metric 'bleu' is unknown; allowed: \['accuracy'"):
        compute_metrics([0], [0], "bleu")
    with pytest.raises(ValueError, match="2 predictions but 3 labels"):
        compute_metrics([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="one column"):
        compute_metrics(torch.zeros(3, 1), [0, 1, 1], "accuracy")
    with pytest.raises(ValueError, match="regression outputs"):
        compute_metrics(torch.zeros(3, 2), [0.0, 1.0, 1.0], "pearson")
    assert math.isnan(compute_metrics([], [])["accuracy"])
