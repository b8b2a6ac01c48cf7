"""P3 — one rewinding training step at level k (k·10 % of heads and FFNs pruned), side by side (interleaved):

- masked_dense:  the full model with the ticket multiplied in, model(..., head_mask=ticket.head_mask(),
                 ffn_mask=ticket.ffn_mask()) — the authors' way (every pruned structure still computed)
- compact:       ft.rewind(model, ticket): the physically compact model (pruned heads/FFNs not computed)
- compact_compiled / masked_dense_compiled: the same steps with the model under torch.compile (the peer a
                 PyTorch user would try; on CUDA only: inductor's compile time dominates a CPU run)
One step = train-mode forward (dropout on) + mean loss + backward + clip_grad_norm_(1.0) + Adamax step +
zero_grad; CUDA runs under bf16 autocast with fp32 weights (as ft.fine_tune). The batch is full length (no
padding) so that the analytic FLOP count is exact. Ticket: ft.select over seeded random scores (kind
"winning", min 1 head per layer). The ideal speed-up = train FLOPs(dense) / train FLOPs(compact), matmul
FLOPs of the encoder + classification head, embeddings excluded (lookups, no matmul) — see
_models.forward_flops. P3 target: measured speed-up ≥ 0.9 × ideal.
Run:  pytest bench/bench_rewind.py   (FASTTICKET_BENCH_SMOKE=1: tiny random model)."""

import os

import pytest
import torch

import fastticket as ft
from _models import autocast, batch as make_batch, build, train_flops
from _record import CUDA, SMOKE, checked, interleaved, record, scale

CONFIGS = scale(
    smoke={"tiny": ("tiny", 2, 17)},
    cpu={"minilm-B16-T128": ("minilm", 16, 128)},
    gpu={"minilm-B32-T128": ("minilm", 32, 128), "bert-base-B32-T128": ("bert-base", 32, 128),
         "bert-large-B8-T128": ("bert-large", 8, 128)},
)
LEVELS = scale([3], [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8])
if os.environ.get("FASTTICKET_BENCH_LEVELS"):  # e.g. "1,4,8" (make gpu-check: a time budget)
    LEVELS = [int(x) for x in os.environ["FASTTICKET_BENCH_LEVELS"].split(",")]
COMPILED_LEVELS = {4}  # torch.compile peers at one level per model: each compile costs tens of seconds
ROUNDS = scale(1, 5, int(os.environ.get("FASTTICKET_BENCH_ROUNDS", 20)))

_models: dict = {}


def _model(name):
    if name not in _models:
        _models[name] = build(name)
    return _models[name]


def ticket_at(model, level: int, seed: int = 0):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    scores = ft.Importance(torch.rand(c.num_layers, c.num_heads, generator=g), torch.rand(c.num_layers, generator=g))
    return ft.select(scores, sparsity=level / 10, kind="winning", seed=seed)


def train_step_fn(model, b, head_mask=None, ffn_mask=None, compiled=False):
    model.train()
    run = torch.compile(model) if compiled else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adamax(params, lr=1e-5)
    kw = {} if head_mask is None else {"head_mask": head_mask, "ffn_mask": ffn_mask}

    def step():
        with autocast():
            loss = run(**b, **kw).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_rewind_step(benchmark, name, level):
    model_name, B, T = CONFIGS[name]
    base, desc = _model(model_name)
    b = make_batch(base, B, T, full=True)
    ticket = ticket_at(base, level)
    import copy

    dense = copy.deepcopy(base)
    compact = ft.rewind(base, ticket)
    dev = next(dense.parameters()).device
    fns = {
        "masked_dense": train_step_fn(dense, b, ticket.head_mask(device=dev), ticket.ffn_mask(device=dev)),
        "compact": train_step_fn(compact, b),
    }
    missing = {}
    for label, m, kw in (("masked_dense_compiled", copy.deepcopy(base), dict(head_mask=ticket.head_mask(device=dev),
                                                                            ffn_mask=ticket.ffn_mask(device=dev))),
                         ("compact_compiled", ft.rewind(base, ticket), {})):
        if CUDA and level in COMPILED_LEVELS:
            checked(fns, missing, label, lambda m=m, kw=kw: train_step_fn(m, b, compiled=True, **kw))
        elif not CUDA:
            missing[label] = "torch.compile peer measured on CUDA only (inductor's compile time dominates on CPU)"
    results = interleaved(benchmark, fns, rounds=ROUNDS, warmup=0 if SMOKE else 1)
    f_dense, f_compact = train_flops(dense, B, T), train_flops(compact, B, T)
    record("rewind", results, {
        "name": name, "model": desc, "B": B, "T": T, "level": level, "sparsity": level / 10,
        "heads_kept": int(ticket.heads.sum()), "ffn_kept": int(ticket.ffn.sum()),
        "train_flops_dense": f_dense, "train_flops_compact": f_compact, "ideal_speedup": f_dense / f_compact,
        "flops": "matmul FLOPs of encoder + head, ×3 for a training step; embeddings excluded",
        "step": "train fwd + bwd + clip 1.0 + Adamax", "autocast": "bf16" if dev.type == "cuda" else None,
    }, missing)
