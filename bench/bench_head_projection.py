"""head_projection (fastticket/ops/head_projection.py): a Q/K/V ("in") or W_O ("out") projection over a
task's live heads of a shared weight, forward and forward + backward (x, W and b all require grad), half of
the heads live (a 50 % ticket, heads spread over the layout).

Providers, side by side (interleaved) in one test per shape, mode and pass:
- dense:   F.linear over every head (what masked-dense multi-task computes; the mask would multiply after)
- torch:   index_select of the live slices + F.linear (fastticket backend "torch", the baseline)
- triton | cpp | cuda: the fastticket backends, when registered and runnable here (else recorded missing)
Run:  pytest bench/bench_head_projection.py   (FASTTICKET_BENCH_SMOKE=1: tiny sizes, nothing recorded)."""

import pytest
import torch
import torch.nn.functional as F

from _record import DEVICE, DTYPE, SMOKE, interleaved, op_providers, record, scale

OP = "head_projection"
try:
    from fastticket.ops.head_projection import head_projection
except ImportError as exc:  # the op is not in this checkout: reported by the test below
    head_projection, IMPORT_ERROR = None, f"fastticket.ops.head_projection is not importable: {exc}"

# name: (tokens = B·T, hidden C, heads H, head_dim D)
SHAPES = scale(
    smoke={"tiny": (34, 48, 4, 8)},
    cpu={"minilm-B32-T128": (4096, 384, 12, 32)},
    gpu={"minilm-B32-T128": (4096, 384, 12, 32), "bert-base-B32-T128": (4096, 768, 12, 64),
         "bert-large-B8-T128": (1024, 1024, 16, 64)},
)
ROUNDS = scale(1, 15, 50)


@pytest.mark.parametrize("passes", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("mode", ["in", "out"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_head_projection(benchmark, shape, mode, passes):
    N, C, H, D = SHAPES[shape]
    config = {"shape": shape, "tokens": N, "C": C, "H": H, "D": D, "live_heads": H // 2, "mode": mode, "pass": passes}
    if head_projection is None:
        record("head_projection", {}, config, {"torch": IMPORT_ERROR})
        pytest.skip(IMPORT_ERROR)
    g = torch.Generator().manual_seed(0)
    heads = torch.arange(0, H, 2)  # every other head live
    if mode == "in":
        w, b = torch.randn(H * D, C, generator=g), torch.randn(H * D, generator=g)
        x, xd = torch.randn(N, C, generator=g), None
    else:
        w, b = torch.randn(C, H * D, generator=g), torch.randn(C, generator=g)
        x, xd = torch.randn(N, len(heads) * D, generator=g), torch.randn(N, H * D, generator=g)
    w, b, x = (t.to(DEVICE, DTYPE) for t in (w, b, x))
    xd = None if xd is None else xd.to(DEVICE, DTYPE)
    heads_dev = heads.to(DEVICE)
    ok, missing = op_providers(OP)
    fns = {"dense": lambda x_, w_, b_: F.linear(x_ if xd is None else xd.requires_grad_(x_.requires_grad), w_, b_)}
    for name, backend in ok.items():
        fns[name] = (lambda bk: lambda x_, w_, b_: head_projection(x_, w_, b_, heads_dev, D, mode, backend=bk))(backend)
    calls = {}
    for name, f in fns.items():
        try:
            calls[name] = _call(f, x, w, b, passes)
        except Exception as exc:  # noqa: BLE001  (reported, not dropped)
            missing[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    results = interleaved(benchmark, calls, rounds=ROUNDS, warmup=0 if SMOKE else 3)
    record("head_projection", results, config, missing)


def _call(f, x, w, b, passes):
    if passes == "fwd":
        def fwd():
            with torch.no_grad():
                return f(x, w, b)
        fwd()
        return fwd

    def fwd_bwd():
        xl, wl, bl = (t.detach().requires_grad_(True) for t in (x, w, b))
        y = f(xl, wl, bl)
        y.backward(torch.ones_like(y))

    fwd_bwd()
    return fwd_bwd
