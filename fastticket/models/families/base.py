"""The family protocol: everything fastticket knows about one Hugging Face model family, in one object.

A family reads its Hugging Face config into EncoderConfig keyword arguments (refusing what the encoder does
not implement), names every weight both ways, says how positions are numbered and how long an input may be,
describes its classification head (which part is a pre-trained pooler), and writes the config of an `hf`
export. The encoder, loading, export, rewind and sharing ask the family object; nothing else branches on a
family's name. docs/adding-a-family.md is the recipe for a new one.
"""

from __future__ import annotations

import torch

WB = ("weight", "bias")

# A weight-name map: (our names, HF name). One of ours per HF tensor, or several that the HF checkpoint
# stores concatenated along dim 0 (ModernBERT's fused Wqkv; its GeGLU Wi = [input; gate]).
WeightNames = list[tuple[tuple[str, ...], str]]


def linear_names(ours: str, theirs: str, bias: bool = True) -> WeightNames:
    """weight (and bias) of one Linear/LayerNorm: ours.<p> <-> theirs.<p>."""
    return [((f"{ours}.{p}",), f"{theirs}.{p}") for p in (WB if bias else ("weight",))]


def layer_names(num_layers: int, stem: str, names: dict[str, tuple[str, bool]]) -> WeightNames:
    """Per layer i: layers.i.<ours> <-> <stem>.i.<theirs>, with or without bias; names: ours -> (theirs, bias)."""
    out: WeightNames = []
    for i in range(num_layers):
        for ours, (theirs, bias) in names.items():
            out += linear_names(f"layers.{i}.{ours}", f"{stem}.{i}.{theirs}", bias)
    return out


def hf_num_labels(c: dict) -> int:
    if c.get("num_labels") is not None:
        return int(c["num_labels"])
    if c.get("id2label"):
        return len(c["id2label"])
    return 2


def refuse(option: str, value, allowed: str) -> None:
    raise ValueError(f"{option}={value!r} is not supported; allowed: {allowed}")


class Family:
    """Base class of the family adapters; one instance per family is registered in families/__init__.py."""

    name: str = ""
    model_types: tuple[str, ...] = ()  # the HF model_type values this family reads
    architectures: dict[str, str] = {}  # HF model_type -> its sequence-classification class (hf export)
    base_prefix: str = ""  # HF base_model_prefix: where the encoder sits in a task checkpoint
    anchor: str = "embeddings.word_embeddings.weight"  # an encoder weight every checkpoint has (finds the prefix)
    # True: head.dense (+ head.norm) is a pre-trained pooler when the checkpoint has it (BERT's pooler,
    # DeBERTa's ContextPooler, ModernBERT's prediction head); False: it belongs to the task layer.
    has_pretrained_pooler: bool = False
    transformers_class: str = ""  # the config class transformers needs for this family (version check)
    variable: frozenset = frozenset()  # defaults() fields this family's HF configs may set otherwise
    rotary: bool = False  # rotary positions and local windows (rope_theta, layer_windows)
    relative: bool = False  # DeBERTa's relative attention (relative_attention, pos_att_type, ...)

    # ------------------------------------------------------------------------------------------ config

    def defaults(self, config) -> dict:
        """EncoderConfig values for the family-shaped fields a config leaves None (a hand-built config)."""
        return {
            "pre_norm": False, "first_attention_norm": True, "attention_bias": True, "mlp_bias": True,
            "norm_bias": True, "glu": False, "absolute_positions": True, "embedding_projection": "after_norm",
            "output_dropout": config.hidden_dropout, "ffn_dropout": config.hidden_dropout,
            "relative_attention": False, "pooling": "cls", "pooler_act": "tanh", "pooler_dropout": 0.0,
            "pooler_bias": True, "pooler_norm": False,
        }

    def config_kwargs(self, c: dict) -> dict:
        """EncoderConfig keyword arguments from an HF config dict (all but num_labels / hf_model_type /
        hf_config); one ValueError naming the first option this family cannot run."""
        raise NotImplementedError

    def hf_config(self, config) -> dict:
        """The HF config keys `config` determines (sizes, dropouts, options): config.json of an hf export is the
        source config updated with these, so that config_kwargs(hf_config(config)) describes `config` again."""
        raise NotImplementedError

    def check(self, config) -> None:
        """Refuses an EncoderConfig this family's HF architecture cannot express (a hand-built one);
        config_kwargs already refuses unsupported HF options by name."""
        for name, value in self.defaults(config).items():
            if name not in self.variable and not name.endswith("dropout") and getattr(config, name) != value:
                refuse(f"{name} (family {self.name!r})", getattr(config, name), repr(value))
        if not self.rotary and (config.rope_theta is not None or config.layer_windows is not None):
            refuse(f"rope_theta/layer_windows (family {self.name!r})", (config.rope_theta, config.layer_windows), "None")
        if not self.relative and (config.relative_attention or config.pos_att_type):
            refuse(f"relative_attention/pos_att_type (family {self.name!r})",
                   (config.relative_attention, config.pos_att_type), "(False, [])")

    # --------------------------------------------------------------------------------- positions, lengths

    def position_ids(self, input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
        """int [B, T] indices into the absolute position table: 0, 1, 2, ... by default."""
        return torch.arange(input_ids.shape[1], device=input_ids.device)[None, :].expand_as(input_ids)

    def max_length(self, config) -> int:
        """The longest input the model takes, in tokens."""
        return config.max_position_embeddings

    # ------------------------------------------------------------------------------------------- weights

    def encoder_weights(self, config) -> WeightNames:
        """Every encoder parameter of a full model (our name) <-> its HF name without the base-model prefix."""
        raise NotImplementedError

    def pooler_weights(self, config, prefix: str) -> WeightNames:
        """head.dense (+ head.norm) <-> full HF names; prefix: the checkpoint's base prefix ('' or 'bert.')."""
        raise NotImplementedError

    def classifier_weights(self, config, prefix: str) -> WeightNames:
        """head.out <-> the full HF names of the final classification layer."""
        raise NotImplementedError

    def pooler_is_pretrained(self, config) -> bool:
        """Whether head.dense (+ norm) is a pre-trained pooler (kept when the task layer is re-initialized)
        rather than part of the task layer: what the checkpoint said when it was loaded, else the family's rule."""
        return self.has_pretrained_pooler if config.pretrained_pooler is None else bool(config.pretrained_pooler)
