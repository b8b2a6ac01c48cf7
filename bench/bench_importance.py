"""The importance pass (ft.importance, estimator "paper": one forward + backward with per-example masks) of
the embedded MiniLM (all-MiniLM-L6-v2) on one batch of B = 32, T = 128 (lengths from T/2 to T), on CPU, with
backend="cpp" vs backend="torch". Run:  pytest bench/bench_importance.py
(FASTTICKET_BENCH_SMOKE=1: a tiny random model, B = 2, T = 17)."""

import pytest
import torch

import fastticket as ft
from _record import SMOKE, cpu_providers, record, run

B, T = (2, 17) if SMOKE else (32, 128)


def _model():
    if SMOKE:  # a tiny random encoder (no download, no checkpoint)
        from fastticket.models import EncoderConfig, TicketModel

        torch.manual_seed(0)
        cfg = EncoderConfig(family="bert", vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                            intermediate_size=37, max_position_embeddings=64, num_labels=2)
        return TicketModel(cfg).eval(), "tiny"
    from fastticket.defaults import default_model_path

    return ft.load_model(default_model_path(), num_labels=2).eval(), "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def setup():
    model, name = _model()
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, vocab, (B, T), generator=g) * mask
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (B,), generator=g)}
    return model, name, batch


@pytest.mark.parametrize("provider", cpu_providers("masked_attention"))
@pytest.mark.parametrize("estimator", ["paper"])
def test_importance(benchmark, setup, provider, estimator):
    model, name, batch = setup
    scores = run(benchmark, lambda: ft.importance(model, [batch], estimator=estimator, batch_size=B, backend=provider,
                                                  progress=False), rounds=7, warmup=1)
    assert torch.isfinite(scores.heads).all()
    record(benchmark, "importance", provider, {"model": name, "B": B, "T": T, "estimator": estimator, "dtype": "float32",
                                               "lengths": "uniform[T/2, T], first full"})
