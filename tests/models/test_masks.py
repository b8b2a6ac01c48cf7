"""Head and FFN mask semantics (docs/method.md §1), checked against Hugging Face models edited or hooked by hand.

ξ[l, h] scales head h's context before W_O: the same as scaling W_O's input columns of head h.
ν[l] scales the FFN output (after its dropout) before the residual add: ν = 0 is the same as zeroing the
FFN's second linear layer, weight and bias, so that the layer outputs LayerNorm(x).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch

import fastticket as ft

FAMILIES = ["bert", "roberta", "electra-project", "distilbert"]
ATOL = 1e-5
L, H, D = 2, 4, 8  # the tiny models' layers, heads, head dim


def layers(hf):
    base = hf.base_model
    return base.transformer.layer if hasattr(base, "transformer") else base.encoder.layer


def w_o(layer):  # the attention output projection W_O
    return layer.attention.out_lin if hasattr(layer.attention, "out_lin") else layer.attention.output.dense


def ffn_down(layer):  # the FFN's second linear layer
    return layer.ffn.lin2 if hasattr(layer, "ffn") else layer.output.dense


def ours_inputs(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels") if k in batch}


def hooked_hf(hf, head_mask=None, ffn_mask=None):
    """Registers hooks that apply the masks inside the HF model: W_O's input scaled per head, the FFN's second
    linear output scaled (dropout is off in eval). Masks [L, H]/[L] or [B, L, H]/[B, L]. Returns the handles."""
    handles = []
    for l, layer in enumerate(layers(hf)):
        if head_mask is not None:
            def scale_heads(module, args, l=l):
                (x,) = args
                xi = head_mask[..., l, :]  # [H] or [B, H]
                xi = xi.repeat_interleave(D, dim=-1)
                return (x * (xi[:, None, :] if xi.dim() == 2 else xi),)
            handles.append(w_o(layer).register_forward_pre_hook(scale_heads))
        if ffn_mask is not None:
            def scale_ffn(module, args, out, l=l):
                nu = ffn_mask[..., l]
                return out * (nu[:, None, None] if nu.dim() == 1 else nu)
            handles.append(ffn_down(layer).register_forward_hook(scale_ffn))
    return handles


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_head_mask_equals_zeroed_wo_columns(family, hf_model, hf_batch):
    hf = hf_model(family)
    batch = hf_batch(hf)
    ours = ft.load_model(hf)
    pruned = {(0, 1), (1, 0), (1, 3)}
    head_mask = torch.ones(L, H)
    edited = copy.deepcopy(hf)
    with torch.no_grad():
        for l, h in pruned:
            head_mask[l, h] = 0
            w_o(layers(edited)[l]).weight[:, h * D : (h + 1) * D] = 0  # the bias stays
        expected = edited(**batch)
        got = ours(**ours_inputs(batch), head_mask=head_mask)
        unmasked = ours(**ours_inputs(batch)).logits
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=0)
    assert (got.logits - unmasked).abs().max() > 1e-3  # the mask does something


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_ffn_mask_equals_zeroed_ffn_output(family, hf_model, hf_batch):
    hf = hf_model(family)
    batch = hf_batch(hf)
    ours = ft.load_model(hf)
    edited = copy.deepcopy(hf)
    with torch.no_grad():
        down = ffn_down(layers(edited)[1])
        down.weight.zero_()
        down.bias.zero_()  # the layer's output becomes LayerNorm(x)
        expected = edited(**batch)
        got = ours(**ours_inputs(batch), ffn_mask=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=0)

    # per example: only row 0 has the FFN of layer 1 pruned
    ffn_mask = torch.ones(len(batch["input_ids"]), L)
    ffn_mask[0, 1] = 0
    with torch.no_grad():
        got = ours(**ours_inputs(batch), ffn_mask=ffn_mask).logits
        full = hf(**batch).logits
    torch.testing.assert_close(got[0], expected.logits[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1:], full[1:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
@pytest.mark.parametrize("per_example", [False, True], ids=["per_model", "per_example"])
def test_fractional_masks_and_their_gradients_match_hooked_hf(family, per_example, hf_model, hf_batch):
    hf = hf_model(family)
    batch = hf_batch(hf)
    ours = ft.load_model(hf)
    gen = torch.Generator().manual_seed(1)
    lead = (len(batch["input_ids"]),) if per_example else ()
    head_mask = torch.rand(lead + (L, H), generator=gen)
    ffn_mask = torch.rand(lead + (L,), generator=gen)

    xi, nu = head_mask.clone().requires_grad_(), ffn_mask.clone().requires_grad_()
    handles = hooked_hf(hf, xi, nu)
    try:
        expected = hf(**batch)
    finally:
        for handle in handles:
            handle.remove()
    expected.loss.backward()

    head, ffn = head_mask.clone().requires_grad_(), ffn_mask.clone().requires_grad_()
    got = ours(**ours_inputs(batch), head_mask=head, ffn_mask=ffn)
    got.loss.backward()
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(head.grad, xi.grad, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(ffn.grad, nu.grad, atol=ATOL, rtol=1e-4)
    assert head.grad.abs().sum() > 0 and ffn.grad.abs().sum() > 0


def test_per_model_mask_equals_identical_per_example_rows(hf_model, hf_batch):
    hf = hf_model("bert")
    batch = hf_batch(hf)
    ours = ft.load_model(hf)
    b = len(batch["input_ids"])
    gen = torch.Generator().manual_seed(2)
    head_mask = (torch.rand(L, H, generator=gen) > 0.4).float()
    ffn_mask = torch.tensor([0.0, 1.0])
    head_rows = head_mask.expand(b, L, H).clone().requires_grad_()
    ffn_rows = ffn_mask.expand(b, L).clone().requires_grad_()
    head_model, ffn_model = head_mask.clone().requires_grad_(), ffn_mask.clone().requires_grad_()
    per_model = ours(**ours_inputs(batch), head_mask=head_model, ffn_mask=ffn_model)
    per_example = ours(**ours_inputs(batch), head_mask=head_rows, ffn_mask=ffn_rows)
    torch.testing.assert_close(per_example.logits, per_model.logits, atol=1e-6, rtol=0)
    per_model.loss.backward()
    per_example.loss.backward()
    # a per-model mask's gradient is the sum of the per-example ones
    torch.testing.assert_close(head_rows.grad.sum(0), head_model.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ffn_rows.grad.sum(0), ffn_model.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_per_example_masks_equal_running_each_row_alone(family, hf_model, hf_batch):
    hf = hf_model(family)
    lengths = (7, 5, 2, 6)
    batch = hf_batch(hf, lengths=lengths)
    ours = ft.load_model(hf)
    gen = torch.Generator().manual_seed(3)
    head_mask = (torch.rand(len(lengths), L, H, generator=gen) > 0.5).float()
    head_mask[:, :, 0] = 1  # no layer entirely pruned (allowed, but keep the check meaningful)
    ffn_mask = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.3, 0.7]])
    inputs = ours_inputs(batch)
    inputs.pop("labels")
    with torch.no_grad():
        together = ours(**inputs, head_mask=head_mask, ffn_mask=ffn_mask).logits
        for b, n in enumerate(lengths):
            row = {k: v[b : b + 1, :n] for k, v in inputs.items()}  # the row alone, without padding
            alone = ours(**row, head_mask=head_mask[b], ffn_mask=ffn_mask[b]).logits
            torch.testing.assert_close(together[b : b + 1], alone, atol=ATOL, rtol=0)


def test_all_ones_and_integer_masks(hf_model, hf_batch):
    hf = hf_model("bert")
    batch = hf_batch(hf)
    ours = ft.load_model(hf)
    inputs = ours_inputs(batch)
    with torch.no_grad():
        plain = ours(**inputs).logits
        ones = ours(**inputs, head_mask=torch.ones(L, H), ffn_mask=torch.ones(L)).logits
        torch.testing.assert_close(ones, plain, atol=1e-6, rtol=0)
        head_bool = torch.ones(L, H, dtype=torch.bool)
        head_bool[1, 2] = False
        as_bool = ours(**inputs, head_mask=head_bool, ffn_mask=torch.tensor([1, 0])).logits
        as_float = ours(**inputs, head_mask=head_bool.float(), ffn_mask=torch.tensor([1.0, 0.0])).logits
        torch.testing.assert_close(as_bool, as_float, atol=0, rtol=0)
        as_double = ours(**inputs, head_mask=head_bool.double(), ffn_mask=torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert as_double.logits.dtype == torch.float32
    torch.testing.assert_close(as_double.logits, as_float, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("head_mask", (L, H + 1)),
        ("head_mask", (L + 1, H)),
        ("head_mask", (L * H,)),
        ("head_mask", (3, L, H)),  # the batch has 4 rows
        ("head_mask", (4, L, H, 1)),
        ("ffn_mask", (L + 1,)),
        ("ffn_mask", (4, L, 1)),
        ("ffn_mask", (3, L)),
        ("ffn_mask", ()),
    ],
)
def test_mask_of_wrong_shape_is_rejected(name, shape, hf_model, hf_batch):
    hf = hf_model("bert")
    ours = ft.load_model(hf)
    batch = hf_batch(hf)
    allowed = "[L, H]" if name == "head_mask" else "[L]"
    with pytest.raises(ValueError, match=rf"{name} has shape {re.escape(str(shape))}.*allowed: {re.escape(allowed)}"):
        ours(**ours_inputs(batch), **{name: torch.ones(shape)})


@pytest.mark.parametrize(
    "mask, message",
    [
        ([[0, 0, 1, 1], [1, 1, 1, 1]], "right-padded"),  # left padding
        ([[1, 0, 1, 1], [1, 1, 1, 1]], "right-padded"),  # a hole
        ([[0, 0, 0, 0], [1, 1, 1, 1]], "no tokens"),
        ([[1, 1, 1], [1, 1, 1]], r"attention_mask has shape \(2, 3\)"),
    ],
    ids=["left", "inner", "empty", "shape"],
)
def test_bad_attention_mask_is_rejected(mask, message, hf_model):
    ours = ft.load_model(hf_model("bert"))
    ids = torch.randint(3, 90, (2, 4))
    with pytest.raises(ValueError, match=message):
        ours(ids, attention_mask=torch.tensor(mask))
