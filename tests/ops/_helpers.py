"""Shared pieces of the op tests: seeded inputs, poisoning, and error measures against fp64 oracles."""

from __future__ import annotations

import torch

from fastticket.ops import dispatch


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    """fp64 standard-normal tensor, reproducible from `seed` alone."""
    return torch.randn(shape, generator=gen(seed), dtype=torch.float64) * scale


def poison(device, *shapes) -> None:
    """Leaves NaN in freed memory of the sizes an op is about to allocate (effective with caching allocators)."""
    bufs = [torch.full(tuple(s), float("nan"), device=device) for s in shapes]
    del bufs


def leaves(*tensors):
    """Detached copies that require grad (None stays None)."""
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def max_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.detach().double() - expected.detach().double()).abs().max().item() if expected.numel() else 0.0


def assert_close_ref(actual, expected, name: str, rtol: float = 1e-5, atol: float = 1e-6, mag: float = 0.0) -> None:
    """max|actual - expected| <= atol + rtol * max(max|expected|, mag) (expected: the fp64 oracle), shapes
    equal, finite. `mag`: the size of the summed terms where the expected value is a cancelling sum."""
    assert actual is not None, f"{name}: no gradient"
    assert tuple(actual.shape) == tuple(expected.shape), f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = max_err(actual, expected)
    bound = atol + rtol * max(expected.detach().double().abs().max().item() if expected.numel() else 0.0, mag)
    assert err <= bound, f"{name}: max abs error {err:.3g} > {bound:.3g}"


def assert_flash_rule(actual, ref_low, ref64, name: str, slack: float) -> None:
    """FlashAttention's rule: error vs fp64 <= 2x the eager low-precision error + slack * max(max|ref64|, 0.01).

    (The floor keeps exactly-zero references, e.g. dq at T = 1, from demanding exact zeros.)"""
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = max_err(actual, ref64)
    err_low = max_err(ref_low, ref64)
    bound = 2.0 * err_low + slack * max(ref64.detach().double().abs().max().item(), 0.01)
    assert err <= bound, f"{name}: error {err:.3g} > 2 x eager error {err_low:.3g} + slack (bound {bound:.3g})"


def skip_unless_supported(pytest, op: str, backend: str, *tensors) -> None:
    """Skips when `backend` is registered but says it does not run these tensors (dtype/device)."""
    try:
        dispatch.resolve(op, backend, *tensors)
    except ValueError as e:
        pytest.skip(f"{backend} does not support these inputs: {e}")


def mask_grad_mag(probe64: torch.Tensor, scale: torch.Tensor | None) -> float:
    """Σ_t |r_t| behind a mask gradient Σ_t r_t: per example, or summed over the batch for a per-model scale."""
    per_model = scale is not None and scale.dim() == probe64.dim() - 1
    return (probe64.sum(0) if per_model else probe64).max().item()


def backend_devices(op: str, make_inputs) -> list[tuple[str, str]]:
    """(backend, device) pairs to test: every registered backend on CPU and, where there is one, CUDA,
    wherever it supports fp32 inputs built by make_inputs(device)."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    pairs = []
    for backend in dispatch.available(op):
        for device in devices:
            try:
                dispatch.resolve(op, backend, *make_inputs(device))
            except ValueError:
                continue
            pairs.append((backend, device))
    return pairs

