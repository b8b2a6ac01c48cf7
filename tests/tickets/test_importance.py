"""ft.importance against its definitions, computed independently of the fused per-example pass."""

import pytest
import torch

import fastticket as ft
from fastticket import reference
from fastticket.data import iterate_batches
from fastticket.models import blocks as encoder_module  # where the encoder calls the fused ops
from fastticket.models import task_loss
from tests.helpers import tiny_model, tokenized_dataset


def _single_example_grads(model, dataset):
    """∂L(x)/∂mask for every example alone: one unpadded forward + backward per example."""
    cfg = model.config
    heads, ffn = [], []
    for row in dataset:
        head_mask = torch.ones(cfg.num_layers, cfg.num_heads, requires_grad=True)
        ffn_mask = torch.ones(cfg.num_layers, requires_grad=True)
        ids = torch.tensor([row["input_ids"]])
        types = torch.tensor([row["token_type_ids"]])
        logits = model(ids, token_type_ids=types, head_mask=head_mask, ffn_mask=ffn_mask, backend="torch").logits
        task_loss(logits, torch.tensor([row["labels"]])).backward()
        heads.append(head_mask.grad.double())
        ffn.append(ffn_mask.grad.double())
    return torch.stack(heads), torch.stack(ffn)


def _close(a, b, rtol=1e-5):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    assert (a - b).abs().max().item() <= rtol * scale, ((a - b).abs().max().item(), scale)


@pytest.mark.parametrize("num_labels", [3, 1])
@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_paper_equals_per_example_loop_with_padding(family, num_labels):
    model = tiny_model(family=family, num_labels=num_labels, type_vocab_size=0 if family == "distilbert" else 2)
    data = tokenized_dataset(n=9, num_labels=num_labels, pairs=family == "bert")
    if family != "bert":
        data = data.remove_columns("token_type_ids").add_column("token_type_ids", [[0] * len(r) for r in data["input_ids"]])
    heads, ffn = _single_example_grads(model, data)
    scores = ft.importance(model, data, batch_size=4, progress=False)  # batches of 4: padded, last one short
    assert scores.estimator == "paper" and scores.num_examples == 9
    _close(scores.heads, heads.abs().mean(0))
    _close(scores.ffn, ffn.abs().mean(0))
    assert (scores.heads > 0).all() and (scores.ffn > 0).all()


def test_batch_size_and_padding_do_not_change_paper_scores(model, dataset):
    runs = [ft.importance(model, dataset, batch_size=b, progress=False) for b in (1, 3, 11)]
    for other in runs[1:]:
        _close(other.heads, runs[0].heads)
        _close(other.ffn, runs[0].ffn)


def test_batch_and_fisher_estimators_match_their_definitions(model, dataset):
    cfg = model.config
    sums = {"batch": [0, 0], "fisher": [0, 0]}
    batches = list(iterate_batches(dataset, 4, cfg.pad_token_id))
    for batch in batches:
        head_mask = torch.ones(cfg.num_layers, cfg.num_heads, requires_grad=True)
        ffn_mask = torch.ones(cfg.num_layers, requires_grad=True)
        labels = batch.pop("labels")
        model(**batch, head_mask=head_mask, ffn_mask=ffn_mask, labels=labels).loss.backward()  # batch-mean loss
        gh, gf = head_mask.grad.double(), ffn_mask.grad.double()
        sums["batch"][0] += gh.abs(); sums["batch"][1] += gf.abs()
        sums["fisher"][0] += gh ** 2; sums["fisher"][1] += gf ** 2
    batch = ft.importance(model, dataset, estimator="batch", batch_size=4, progress=False)
    _close(batch.heads, sums["batch"][0] / len(batches))
    _close(batch.ffn, sums["batch"][1] / len(batches))
    fisher = ft.importance(model, dataset, estimator="fisher", batch_size=4, progress=False)
    _close(fisher.heads, sums["fisher"][0])
    _close(fisher.ffn, sums["fisher"][1])


def test_official_matches_its_definition(model, dataset, monkeypatch):
    """Σ_t |⟨∂L/∂ctx_t, ctx_t⟩| per example from per-token scales on the reference ops (no probes)."""
    token_scales = []

    def attention(q, k, v, head_scale, lengths, dropout_p, softmax_scale, backend, abs_probe):
        s = torch.ones(q.shape[:3], dtype=q.dtype, requires_grad=True)
        token_scales.append(("head", s))
        return reference.masked_attention(q, k, v, s, lengths, softmax_scale=softmax_scale)

    def residual_layernorm(x, residual, scale, weight, bias, eps, backend, abs_probe):
        s = torch.ones(x.shape[:2], dtype=x.dtype, requires_grad=True)
        token_scales.append(("ffn", s))
        return reference.masked_residual_layernorm(x, residual, s, weight, bias, eps)

    expected_h = torch.zeros(model.config.num_layers, model.config.num_heads, dtype=torch.float64)
    expected_f = torch.zeros(model.config.num_layers, dtype=torch.float64)
    with monkeypatch.context() as m:
        m.setattr(encoder_module, "masked_attention", attention)
        m.setattr(encoder_module, "masked_residual_layernorm", residual_layernorm)
        for row in dataset:  # one example at a time, unpadded: the definition, literally
            token_scales.clear()
            ids, types = torch.tensor([row["input_ids"]]), torch.tensor([row["token_type_ids"]])
            task_loss(model(ids, token_type_ids=types).logits, torch.tensor([row["labels"]])).backward()
            heads = [s.grad[0].double().abs().sum(-1) for kind, s in token_scales if kind == "head"]
            ffns = [s.grad[0].double().abs().sum() for kind, s in token_scales if kind == "ffn"]
            expected_h += torch.stack(heads)
            expected_f += torch.stack(ffns)
    scores = ft.importance(model, dataset, estimator="official", batch_size=4, progress=False)
    _close(scores.heads, expected_h / len(dataset))
    _close(scores.ffn, expected_f / len(dataset))
    paper = ft.importance(model, dataset, estimator="paper", batch_size=4, progress=False)
    assert (scores.heads >= paper.heads - 1e-9).all()  # Σ|r_t| >= |Σ r_t|
    assert not torch.allclose(scores.heads, paper.heads)


def test_eval_mode_is_used_and_training_flag_restored(model, dataset):
    expected = ft.importance(model, dataset, batch_size=5, progress=False)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    model.layers[0].attention.dropout_p = 0.5
    model.train()
    got = ft.importance(model, dataset, batch_size=5, progress=False)
    assert model.training
    _close(got.heads, expected.heads)


def test_accepts_dict_batches_and_equals_dataset_path(model, dataset):
    batches = list(iterate_batches(dataset, 4, model.config.pad_token_id))
    from_batches = ft.importance(model, batches, batch_size=4, progress=False)
    from_dataset = ft.importance(model, dataset, batch_size=4, progress=False)
    assert from_batches.num_examples == len(dataset)
    _close(from_batches.heads, from_dataset.heads)


def test_dataset_with_label_column_is_accepted(model, dataset):
    renamed = dataset.rename_column("labels", "label")
    _close(ft.importance(model, renamed, progress=False).heads, ft.importance(model, dataset, progress=False).heads)


@pytest.mark.parametrize("estimator", ["mean", "Paper", ""])
def test_unknown_estimator(model, dataset, estimator):
    with pytest.raises(ValueError, match="estimator .* allowed: .*paper.*official.*batch.*fisher"):
        ft.importance(model, dataset, estimator=estimator)


def test_missing_labels(model, dataset):
    with pytest.raises(ValueError, match="labels"):
        ft.importance(model, dataset.remove_columns("labels"), progress=False)
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in iterate_batches(dataset, 4)]
    with pytest.raises(ValueError, match="labels"):
        ft.importance(model, batches, progress=False)


def test_a_whole_task_is_refused_with_a_hint(model, dataset):
    from fastticket.data.task import Task

    task = Task("t", dataset, dataset, "accuracy", 3)
    with pytest.raises(ValueError, match="task.train"):
        ft.importance(model, task, progress=False)
    with pytest.raises(ValueError, match="batch_size=2.5"):
        ft.importance(model, dataset, batch_size=2.5)


def test_untokenized_dataset_and_bad_batch_size(model, dataset):
    import datasets

    with pytest.raises(ValueError, match="input_ids"):
        ft.importance(model, datasets.Dataset.from_dict({"text": ["a b"], "labels": [0]}), progress=False)
    with pytest.raises(ValueError, match="batch_size=0"):
        ft.importance(model, dataset, batch_size=0)
    with pytest.raises(ValueError, match="no examples"):
        ft.importance(model, [], progress=False)


def test_importance_save_load_and_validation(tmp_path):
    scores = ft.Importance(torch.rand(3, 4), torch.rand(3), "fisher", 17)
    path = tmp_path / "imp.json"
    scores.save(path)
    back = ft.Importance.load(path)
    assert torch.equal(back.heads, scores.heads) and torch.equal(back.ffn, scores.ffn)
    assert (back.estimator, back.num_examples) == ("fisher", 17)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="imp.json"):
        ft.Importance.load(path)
    with pytest.raises(ValueError, match=r"heads \[L, H\] and ffn \[L\]"):
        ft.Importance(torch.rand(3, 4), torch.rand(2))
    with pytest.raises(ValueError, match="estimator 'x'"):
        ft.Importance(torch.rand(3, 4), torch.rand(3), "x")
    with pytest.raises(ValueError, match="NaN"):
        ft.Importance(torch.full((3, 4), float("nan")), torch.rand(3))
