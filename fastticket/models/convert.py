"""Parameter names and tensors: ours <-> Hugging Face's, through the family object. Used to load checkpoints
and to export them; a fused HF tensor (ModernBERT's Wqkv, Wi) is split on the way in and concatenated on the
way out."""

from __future__ import annotations

import torch

from .config import EncoderConfig


def encoder_pairs(config: EncoderConfig) -> list[tuple[str, str]]:
    """(our name, HF name without the base-model prefix) for every encoder parameter of a family whose
    weights map one to one (all but ModernBERT's)."""
    names = config.family_adapter.encoder_weights(config)
    fused = [hf for ours, hf in names if len(ours) != 1]
    if fused:
        raise ValueError(f"family {config.family!r} stores fused weights (e.g. {fused[0]}); use encoder_weights()")
    return [(ours[0], hf) for ours, hf in names]


def head_pairs(config: EncoderConfig, prefix: str) -> list[tuple[str, str]]:
    """(our name, full HF name) for the head: pooler (dense [, norm]) then the classifier; prefix: the
    checkpoint's base prefix ('' or 'bert.'), under which BERT's pooler sits."""
    family = config.family_adapter
    names = family.pooler_weights(config, prefix) + family.classifier_weights(config, prefix)
    return [(ours[0], hf) for ours, hf in names]


def base_prefix(config: EncoderConfig) -> str:
    return config.family_adapter.base_prefix


def hf_tensors(state: dict, config: EncoderConfig) -> dict[str, torch.Tensor]:
    """Our full-layout state (expanded_state_dict) under HF names, as a task checkpoint stores it: the encoder
    under the base prefix, fused tensors concatenated. Every parameter must have an HF name."""
    family = config.family_adapter
    prefix = family.base_prefix + "."
    names = [(ours, prefix + hf) for ours, hf in family.encoder_weights(config)]
    names += family.pooler_weights(config, prefix) + family.classifier_weights(config, prefix)
    named = {o for ours, _ in names for o in ours}
    if named != set(state):
        raise ValueError(f"cannot name {sorted(set(state) ^ named)} in the HF format of family {config.family!r}")
    return {hf: torch.cat([state[o] for o in ours], dim=0).contiguous() for ours, hf in names}


def split_fused(tensor: torch.Tensor, shapes: list[torch.Size], name: str) -> list[torch.Tensor]:
    """An HF tensor that holds several of ours concatenated along dim 0, split by our shapes."""
    sizes = [s[0] for s in shapes]
    if tensor.dim() != len(shapes[0]) or tensor.shape[0] != sum(sizes) or tuple(tensor.shape[1:]) != tuple(shapes[0][1:]):
        expected = (sum(sizes),) + tuple(shapes[0][1:])
        raise ValueError(f"checkpoint weight {name} has shape {tuple(tensor.shape)}; the config implies {expected}")
    return list(torch.split(tensor, sizes, dim=0))


def normalize_hf_state_dict(state: dict) -> dict:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
    out = {}
    for name, tensor in state.items():
        if name.endswith(".gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith(".beta"):
            name = name[: -len("beta")] + "bias"
        out[name] = tensor
    return out


def find_base_prefix(state: dict, anchor: str = "embeddings.word_embeddings.weight") -> str:
    """'' for a bare base model (BertModel), 'bert.' etc. for task models; from the family's anchor weight."""
    for name in state:
        if name.endswith(anchor) and (len(name) == len(anchor) or name[-len(anchor) - 1] == "."):
            return name[: -len(anchor)]
    raise ValueError(f"checkpoint has no '*{anchor}': not a supported encoder checkpoint")
