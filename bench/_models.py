"""Models, batches and FLOP counts of the end-to-end benchmarks (P1, P3, P5).

Models: smoke — a tiny random BERT; CPU — the embedded all-MiniLM-L6-v2 (real weights); GPU — MiniLM
(real weights when the package is installed, else the same shape at random), BERT-base and BERT-large
shapes with random weights (timing does not depend on the values; nothing can be downloaded there).
"""

from __future__ import annotations

import math

import torch

from _record import CUDA, DEVICE, scale
from fastticket.models import EncoderConfig, TicketModel

SHAPES = {  # name: (hidden, layers, heads, intermediate, vocab)
    "tiny": (32, 2, 4, 37, 50),
    "minilm": (384, 6, 12, 1536, 30522),
    "bert-base": (768, 12, 12, 3072, 30522),
    "bert-large": (1024, 24, 16, 4096, 30522),
}


def build(name: str) -> tuple[TicketModel, str]:
    """(model in eval mode on DEVICE, float32 weights, description)."""
    if name == "minilm":
        try:
            import fastticket as ft
            from fastticket.defaults import default_model_path

            return ft.load_model(default_model_path(), num_labels=2).eval().to(DEVICE), "all-MiniLM-L6-v2 (pre-trained)"
        except ValueError:
            pass
    hidden, layers, heads, inter, vocab = SHAPES[name]
    torch.manual_seed(0)
    cfg = EncoderConfig(family="bert", vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                        intermediate_size=inter, max_position_embeddings=512, num_labels=2)
    return TicketModel(cfg).eval().to(DEVICE), f"{name} shape, random weights"


def batch(model: TicketModel, B: int, T: int, seed: int = 0, full: bool = False) -> dict:
    """Right-padded random batch: lengths uniform in [T/2, T] (first row full; every row full if `full`)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.full((B,), T) if full else torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, model.config.vocab_size, (B, T), generator=g) * mask
    labels = torch.randint(0, model.config.num_labels, (B,), generator=g)
    return {"input_ids": ids.to(DEVICE), "attention_mask": mask.to(DEVICE), "labels": labels.to(DEVICE)}


def forward_flops(model: TicketModel, B: int, T: int) -> float:
    """Matmul FLOPs (2·m·n·k) of one forward over B×T tokens (all tokens full length), counting what the
    model holds: per layer Q/K/V/O projections and QKᵀ, PV of its kept heads, FFN up/down if kept; plus the
    classification head on the first token. Embedding lookups, LayerNorms, softmax and activations are
    not counted (no matmul FLOPs)."""
    c = model.config
    C, d = c.hidden_size, c.head_dim
    tokens = B * T
    total = 0.0
    for l in range(c.num_layers):
        h = len(c.layer_heads(l))
        total += tokens * 2 * C * (h * d) * 4            # Q, K, V, O
        total += B * h * T * T * d * 2 * 2                # QKᵀ and PV
        if c.layer_has_ffn(l):
            total += tokens * 2 * C * c.intermediate_size * 2
    total += B * (2 * C * C + 2 * C * c.num_labels)       # head on [CLS]
    return total


def train_flops(model: TicketModel, B: int, T: int) -> float:
    """One training step ≈ 3× the forward matmul FLOPs (forward, input grads, weight grads)."""
    return 3 * forward_flops(model, B, T)


def autocast():
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else contextlib.nullcontext()


__all__ = ["build", "batch", "forward_flops", "train_flops", "autocast", "scale", "math"]


def tiny_task(vocab: int = 50, n_train: int = 8, n_dev: int = 10, T: int = 12, seed: int = 0):
    """A tiny random binary classification ft.Task over `vocab` token ids (smoke runs: no tokenizer, no data)."""
    import datasets

    from fastticket.data.task import Task

    g = torch.Generator().manual_seed(seed)

    def split(n):
        lengths = torch.randint(T // 2, T + 1, (n,), generator=g).tolist()
        ids = [torch.randint(5, vocab, (k,), generator=g).tolist() for k in lengths]
        return datasets.Dataset.from_dict({"input_ids": ids, "labels": torch.randint(0, 2, (n,), generator=g).tolist()})

    return Task(name="tiny", train=split(n_train), dev=split(n_dev), metric="accuracy", num_labels=2,
                metrics=("accuracy",))
