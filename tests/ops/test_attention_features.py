"""masked_attention's optional features, every backend that serves them, against the fp64 oracle:
`attn_bias` ([B|1, H|1, T, T], added to the scaled scores, with its gradient: DeBERTa's disentangled terms)
and `window` (query t attends keys |t − s| <= w: ModernBERT's local layers, w = local_attention // 2).

Checked on real query rows: the output and every gradient (q, k, v, head_scale, attn_bias, the probe), with
padding, pruned heads, window sizes 0 … > T, bias broadcast shapes, T across the triton backend's tiles
(17, 97, 129) and its long backward path (257); bit-identical repeats; under dropout the backward uses the
forward's mask; a backend that does not serve a feature refuses it by name (and "auto" falls back)."""

from __future__ import annotations

import pytest
import torch

from fastticket.ops import dispatch, masked_attention

from ._attention_cases import OP, interpreted, make_case, real_rows, run_op, run_ref
from ._helpers import assert_close_ref, backend_devices, mask_grad_mag, randn, skip_unless_supported

CASES = backend_devices(OP, lambda dev: [torch.zeros(1, 1, 1, 8, device=dev)] * 3)


def serves(backend: str, feature: str) -> bool:
    return feature in dispatch._registry[OP][backend].features


def _compare(out, grads, out64, grads64, lengths, hs, names):
    """Real rows of the output; every gradient, relative to at least the inputs' O(1) scale (a window of 0
    makes dq exactly 0 in exact arithmetic, fp32 SDPA leaves ~1e-6 there)."""
    batch, _, seq, _ = out.shape
    real = real_rows(lengths, batch, seq)
    assert torch.isfinite(out).all()
    assert_close_ref(out * real, out64 * real, "out")
    for name in names:
        mag = mask_grad_mag(grads64["probe"], hs) if name == "head_scale" else 1.0
        assert_close_ref(grads[name], grads64[name], name, mag=mag)


def _bias(shape_kind, batch, heads, seq, seed):
    shape = {"BHTT": (batch, heads), "1HTT": (1, heads), "B1TT": (batch, 1), "11TT": (1, 1)}[shape_kind]
    return randn(shape + (seq, seq), seed)


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("bias_shape", ["BHTT", "1HTT", "B1TT", "11TT"])
@pytest.mark.parametrize("window", [None, 3])
def test_bias_matches_reference(backend, device, bias_shape, window):
    batch, heads, seq, dim = (2, 3, 17, 16) if interpreted(backend) else (3, 5, 37, 16)
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, "example", True, seed=70)
    bias = _bias(bias_shape, batch, heads, seq, 71)
    kw = dict(attn_bias=bias, window=window)
    if not serves(backend, "attn_bias") or (window is not None and not serves(backend, "window")):
        with pytest.raises(ValueError, match="does not serve"):
            masked_attention(q.float(), k.float(), v.float(), None, lengths, backend=backend, **kw)
        return
    skip_unless_supported(pytest, OP, backend, q.to(device, torch.float32))
    out, grads = run_op(backend, device, q, k, v, hs, lengths, g, **dict(kw))
    out64, grads64 = run_ref(q, k, v, hs, lengths, g, **dict(kw))
    assert grads["attn_bias"].shape == bias.shape
    _compare(out, grads, out64, grads64, lengths, hs, ["q", "k", "v", "head_scale", "probe", "attn_bias"])


# window sizes: 0 (itself only), 1, one tile-ish, >= T (global)
@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("seq,window,scale_kind", [(17, 0, "example"), (17, 1, "model"), (97, 5, "example"),
                                                   (129, 64, "example"), (129, 200, "none"), (257, 40, "example")])
def test_window_matches_reference(backend, device, seq, window, scale_kind):
    if not serves(backend, "window"):
        with pytest.raises(ValueError, match="does not serve"):
            masked_attention(*(torch.zeros(1, 1, seq, 8),) * 3, None, window=window, backend=backend)
        return
    batch, heads, dim = (2, 2, 16) if interpreted(backend) else (3, 4, 32)
    if interpreted(backend) and seq == 257 and window != 40:
        pytest.skip("Triton interpreter: one long-path window case")
    q, k, v, hs, lengths, g = make_case(batch, heads, seq, dim, scale_kind, True, seed=seq + window)
    out, grads = run_op(backend, device, q, k, v, hs, lengths, g, window=window)
    out64, grads64 = run_ref(q, k, v, hs, lengths, g, window=window)
    names = ["q", "k", "v", "probe"] + (["head_scale"] if hs is not None else [])
    _compare(out, grads, out64, grads64, lengths, hs, names)
    out2, grads2 = run_op(backend, device, q, k, v, hs, lengths, g, window=window)
    assert torch.equal(out, out2) and all(torch.equal(grads[n], grads2[n]) for n in grads)


@pytest.mark.parametrize("backend,device", CASES)
def test_window_and_dropout_share_the_mask(backend, device):
    """Under dropout with a window, out is linear in v and ξ with one dropped P: <dv, v> = <g, out>, and
    dξ = Σ_t <g_t, out_t / ξ>; keys outside every window get no gradient."""
    if not serves(backend, "window"):
        pytest.skip(f"{backend} does not serve window")
    batch, heads, seq, dim, w = 2, 3, 23, 16, 2
    q, k, v, _, lengths, g = make_case(batch, heads, seq, dim, "none", True, 90)
    hs = 0.5 + torch.rand(batch, heads, dtype=torch.float64)
    torch.manual_seed(9)
    out, grads = run_op(backend, device, q, k, v, hs, lengths, g, dropout_p=0.2, window=w)
    out64, v64 = out.double(), v.float().double()
    r = (g * out64 / hs[:, :, None, None]).sum(-1)
    assert_close_ref(grads["head_scale"], r.sum(-1), "head_scale", mag=r.abs().sum(-1).max().item())
    lhs, rhs = (g * out64).sum((-1, -2)), (grads["v"].double() * v64).sum((-1, -2))
    assert_close_ref(rhs, lhs, "<dv, v> vs <g, out>", mag=(g * out64).abs().sum((-1, -2)).max().item())


def test_window_semantics():
    """window=w: query t sees keys |t - s| <= w; w=0 returns v itself; w >= T is global attention."""
    q, k, v, _, _, _ = make_case(1, 2, 9, 8, "none", False, seed=80)
    assert torch.allclose(masked_attention(q, k, v, None, window=0, backend="torch"), v, atol=1e-6)
    full = masked_attention(q, k, v, None, backend="torch")
    assert torch.allclose(masked_attention(q, k, v, None, window=8, backend="torch"), full, atol=1e-6)
    # moving a key outside every window of query 0 does not change query 0's output
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 5], v2[:, :, 5] = 7.0, -3.0
    a = masked_attention(q, k, v, None, window=2, backend="torch")[:, :, 0]
    b = masked_attention(q, k2, v2, None, window=2, backend="torch")[:, :, 0]
    assert torch.equal(a, b)


def test_auto_falls_back_for_a_feature_its_first_choice_does_not_serve():
    """On CPU "auto" takes cpp when built; a call with attn_bias goes to a backend that serves it."""
    q = torch.randn(1, 2, 5, 8)
    impl = dispatch.resolve(OP, "auto", q, q, q, features=("attn_bias",))
    served = [b for b in dispatch.available(OP) if "attn_bias" in dispatch._registry[OP][b].features]
    assert any(dispatch._registry[OP][b].fn is impl for b in served)


@pytest.mark.parametrize("kw,match", [
    (dict(attn_bias=torch.zeros(2, 3, 5, 5)), "attn_bias has shape"),
    (dict(attn_bias=torch.zeros(1, 1, 5, 4)), "attn_bias has shape"),
    (dict(attn_bias=torch.zeros(1, 1, 5, 5, dtype=torch.long)), "attn_bias has dtype"),
    (dict(window=-1), "window=-1"),
    (dict(window=2.5), "window=2.5"),
    (dict(window=True), "window=True"),
])
def test_bias_and_window_bad_input(kw, match):
    q = torch.zeros(1, 3, 5, 4)
    with pytest.raises(ValueError, match=match):
        masked_attention(q, q, q, None, **kw)
