"""P1 — the importance pass against its peers, side by side (interleaved) on one batch, model in eval mode:

- fastticket:        ft.importance(model, [batch], estimator="paper", backend="auto"): exact per-example
                     |∂L(x)/∂ξ| and |∂L(x)/∂ν| of every example from one forward + backward (mask grads only)
- fastticket_torch:  the same with backend="torch" (SDPA + mask-scale Functions), for reference
- sdpa_plain:        the same TicketModel, no masks, backend="torch" (SDPA), mean loss, loss.backward() over
                     all weights: what a plain fine-tuning fwd+bwd costs (P1's ≤ 1.10× target)
- authors:           the authors' way: eager attention materializing B×H×T×T probabilities
                     (fastticket.reference ops), a per-model head mask [L, H] and FFN mask [L] requiring grad,
                     times per-token scales [B, H, T] / [B, T] requiring grad (their per-token autograd);
                     mean loss, loss.backward() over masks, scales and weights (their code leaves the weights
                     trainable); importance = Σ_tokens |∂L/∂scale_t| (the `official` quantity, the slow way)
- loop:              B single-example passes (each example at its own length, backend="torch"), autograd.grad
                     w.r.t. that example's masks only (weights frozen: the cheapest honest loop)
- vmap_grad:         torch.func's per-example gradients, vmap(grad(loss of one example w.r.t. its masks)) over
                     the batch (weights frozen, eager attention: torch.func cannot vmap the fused ops' autograd
                     Functions), what a PyTorch user would reach for; recorded missing with a reason if it fails
Run:  pytest bench/bench_importance.py   (FASTTICKET_BENCH_SMOKE=1: a tiny random model, B = 2, T = 17)."""

import math
import os

import pytest
import torch

import fastticket as ft
from _models import batch as make_batch, build
from _record import CUDA, DTYPE, SMOKE, checked, interleaved, record, scale
from fastticket import reference
from fastticket.models.encoder import task_loss

# name: (model, B, T)
CONFIGS = scale(
    smoke={"tiny": ("tiny", 2, 17)},
    cpu={"minilm-B32-T128": ("minilm", 32, 128)},
    gpu={"minilm-B32-T128": ("minilm", 32, 128), "bert-base-B32-T128": ("bert-base", 32, 128),
         "bert-large-B8-T128": ("bert-large", 8, 128)},
)
ROUNDS = scale(1, 3, int(os.environ.get("FASTTICKET_BENCH_ROUNDS", 20)))


def authors_pass(model, b, weight_grads: bool = True):
    """Eager attention + per-model masks × per-token scales, loss.backward(); returns Σ_t |grad| per head/FFN.
    weight_grads=False: weights frozen, autograd.grad w.r.t. the per-token scales only (the cheapest variant)."""
    c = model.config
    ids, am, labels = b["input_ids"], b["attention_mask"], b["labels"]
    B, T = ids.shape
    lengths = am.sum(1)
    dtype = next(model.parameters()).dtype
    head_mask = torch.ones(c.num_layers, c.num_heads, device=ids.device, dtype=dtype, requires_grad=True)
    ffn_mask = torch.ones(c.num_layers, device=ids.device, dtype=dtype, requires_grad=True)
    tok_h = torch.ones(B, c.num_layers, c.num_heads, T, device=ids.device, dtype=dtype, requires_grad=True)
    tok_f = torch.ones(B, c.num_layers, T, device=ids.device, dtype=dtype, requires_grad=True)
    h = model.embeddings(ids)
    for l, layer in enumerate(model.layers):
        a, f = layer.attention, layer.ffn
        q, k, v = a._split(a.q(h)), a._split(a.k(h)), a._split(a.v(h))
        ctx = reference.masked_attention(q, k, v, head_mask[l][None, :, None] * tok_h[:, l], lengths,
                                         softmax_scale=1.0 / math.sqrt(a.head_dim))
        h = a.norm(a.o(ctx.transpose(1, 2).reshape(B, T, -1)) + h)
        out = f.down(f.act(f.up(h)))
        h = reference.masked_residual_layernorm(out, h, ffn_mask[l] * tok_f[:, l], f.norm.weight, f.norm.bias, f.norm.eps)
    loss = task_loss(model.head(h), labels)
    if not weight_grads:
        gh, gf = torch.autograd.grad(loss, (tok_h, tok_f))
        return gh.abs().sum((0, 3)), gf.abs().sum((0, 2))
    loss.backward()
    scores = tok_h.grad.abs().sum((0, 3)), tok_f.grad.abs().sum((0, 2))
    model.zero_grad(set_to_none=True)
    return scores


def sdpa_plain(model, b):
    out = model(**b, backend="torch")
    out.loss.backward()
    model.zero_grad(set_to_none=True)


def vmap_per_example(model, b):
    """torch.func: vmap over examples of grad(single-example loss) w.r.t. that example's [L, H] / [L] masks,
    through the model's weights with eager attention (fastticket.reference: torch.func traces plain torch
    ops; the fused ops are autograd Functions it cannot vmap)."""
    from torch.func import grad, vmap

    c = model.config
    dtype = next(model.parameters()).dtype
    hm = torch.ones(c.num_layers, c.num_heads, device=b["input_ids"].device, dtype=dtype)
    fm = torch.ones(c.num_layers, device=hm.device, dtype=dtype)

    def loss_one(hm, fm, ids, length, label):
        h = model.embeddings(ids[None])
        for l, layer in enumerate(model.layers):
            a, f = layer.attention, layer.ffn
            q, k, v = a._split(a.q(h)), a._split(a.k(h)), a._split(a.v(h))
            ctx = reference.masked_attention(q, k, v, hm[l], length[None], softmax_scale=1.0 / math.sqrt(a.head_dim))
            h = a.norm(a.o(ctx.transpose(1, 2).reshape(1, ids.shape[0], -1)) + h)
            h = reference.masked_residual_layernorm(f.down(f.act(f.up(h))), h, fm[l], f.norm.weight, f.norm.bias,
                                                    f.norm.eps)
        return task_loss(model.head(h), label[None])

    gh, gf = vmap(grad(loss_one, argnums=(0, 1)), in_dims=(None, None, 0, 0, 0))(
        hm, fm, b["input_ids"], b["attention_mask"].sum(1), b["labels"])
    return gh.abs().sum(0), gf.abs().sum(0)


def per_example_loop(model, b):
    c = model.config
    dtype = next(model.parameters()).dtype
    lengths = b["attention_mask"].sum(1).tolist()
    heads = torch.zeros(c.num_layers, c.num_heads, device=b["input_ids"].device, dtype=torch.float64)
    ffn = torch.zeros(c.num_layers, device=heads.device, dtype=torch.float64)
    for i, n in enumerate(lengths):
        hm = torch.ones(c.num_layers, c.num_heads, device=heads.device, dtype=dtype, requires_grad=True)
        fm = torch.ones(c.num_layers, device=heads.device, dtype=dtype, requires_grad=True)
        out = model(b["input_ids"][i:i + 1, :n], labels=b["labels"][i:i + 1], head_mask=hm, ffn_mask=fm, backend="torch")
        gh, gf = torch.autograd.grad(out.loss, (hm, fm))
        heads += gh.abs().double()
        ffn += gf.abs().double()
    return heads, ffn


@pytest.mark.parametrize("name", list(CONFIGS))
def test_importance(benchmark, name):
    model_name, B, T = CONFIGS[name]
    model, desc = build(model_name)
    if CUDA:
        model = model.to(DTYPE)
    b = make_batch(model, B, T)
    frozen = dict(b)

    def frozen_weights(fn):
        def run():
            for p in model.parameters():
                p.requires_grad_(False)
            try:
                return fn()
            finally:
                for p in model.parameters():
                    p.requires_grad_(True)
        return run

    fns = {
        "fastticket": lambda: ft.importance(model, [frozen], estimator="paper", batch_size=B, backend="auto", progress=False),
        "fastticket_torch": lambda: ft.importance(model, [frozen], estimator="paper", batch_size=B, backend="torch",
                                                  progress=False),
        "sdpa_plain": lambda: sdpa_plain(model, b),
        "authors": lambda: authors_pass(model, b),
        "authors_frozen": frozen_weights(lambda: authors_pass(model, b, weight_grads=False)),
        "loop": frozen_weights(lambda: per_example_loop(model, b)),
    }
    missing = {}
    checked(fns, missing, "vmap_grad", lambda: frozen_weights(lambda: vmap_per_example(model, b)))
    results = interleaved(benchmark, fns, rounds=ROUNDS, warmup=0 if SMOKE else 1)
    record("importance", results, {"name": name, "model": desc, "B": B, "T": T, "estimator": "paper",
                                   "lengths": "uniform[T/2, T], first full",
                                   "auto_backend": _auto_backend(model)}, missing)


def _auto_backend(model):
    from fastticket.ops import dispatch

    p = next(model.parameters())
    x = torch.zeros(1, 1, 1, 1, device=p.device, dtype=p.dtype)
    impl = dispatch.resolve("masked_attention", "auto", x, x, x, mask_grad=True)
    for backend, entry in dispatch._registry["masked_attention"].items():
        if entry.fn is impl:
            return backend
    return "?"
