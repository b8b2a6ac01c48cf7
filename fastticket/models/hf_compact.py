"""format="hf-compact": a TicketModel as a self-contained Hugging Face checkpoint at its compact shapes.

The directory holds config.json (model_type "fastticket_encoder": the kept heads and the FFN width of every
layer, the family's block, position and head options, an auto_map naming the shipped modeling file's
classes), model.safetensors with our own parameter names at the compact shapes, and modeling_fastticket.py
(the template in hf_modeling/, torch + transformers only). Plain transformers loads it with
`AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)`.

`plain_torch_model` builds the same model in memory (the ONNX export and the latency command run it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys

import torch

from .config import EncoderConfig

MODEL_TYPE = "fastticket_encoder"
MODELING_FILE = "modeling_fastticket.py"
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_modeling", MODELING_FILE)
CONFIG_CLASS, MODEL_CLASS = "FastTicketConfig", "FastTicketForSequenceClassification"
AUTO_MAP = {"AutoConfig": f"modeling_fastticket.{CONFIG_CLASS}",
            "AutoModelForSequenceClassification": f"modeling_fastticket.{MODEL_CLASS}"}
LABEL_KEYS = ("id2label", "label2id", "problem_type")


def is_hf_compact(directory: str) -> bool:
    """Whether `directory`'s config.json is an hf-compact export's."""
    try:
        with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
            return json.load(f).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def position_numbering(config: EncoderConfig) -> str:
    """How the family numbers absolute positions, as the template names it: "from_zero" (0, 1, 2, ...) or
    "after_padding" (RoBERTa). Asked of the family on a probe row, so a new family's rule is checked too."""
    pad = config.pad_token_id
    other = pad + 1 if pad + 1 < config.vocab_size else pad - 1
    ids = torch.tensor([[other, other, pad, other, pad, pad]])  # [1, 6]
    got = config.family_adapter.position_ids(ids, pad)
    if torch.equal(got, torch.arange(6)[None, :]):
        return "from_zero"
    real = ids.ne(pad).long()
    if torch.equal(got, torch.cumsum(real, dim=1) * real + pad):
        return "after_padding"
    raise ValueError(f"family {config.family!r} numbers absolute positions in a way the hf-compact template does not "
                     "implement; allowed: 0, 1, 2, ... or RoBERTa's numbering after the padding index")


def hf_compact_config(config: EncoderConfig, labels: dict) -> dict:
    """config.json of an hf-compact export of a model with EncoderConfig `config`; labels: id2label, label2id,
    problem_type (exporting.hf_config_dict's)."""
    c = config
    layers = range(c.num_layers)
    out = dict(
        model_type=MODEL_TYPE, architectures=[MODEL_CLASS], auto_map=dict(AUTO_MAP),
        source_family=c.family, source_model_type=c.hf_model_type,
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, intermediate_size=c.intermediate_size,
        kept_heads=[c.layer_heads(l) for l in layers], ffn_widths=[c.layer_ffn_width(l) for l in layers],
        max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
        embedding_size=c.embedding_size, hidden_act=c.hidden_act, layer_norm_eps=c.layer_norm_eps,
        hidden_dropout=c.hidden_dropout, attention_dropout=c.attention_dropout, output_dropout=c.output_dropout,
        ffn_dropout=c.ffn_dropout, ffn_inner_dropout=c.ffn_inner_dropout, task_dropout=c.task_dropout,
        initializer_range=c.initializer_range, pad_token_id=c.pad_token_id,
        pre_norm=c.pre_norm, first_attention_norm=c.first_attention_norm, attention_bias=c.attention_bias,
        mlp_bias=c.mlp_bias, norm_bias=c.norm_bias, glu=c.glu,
        absolute_positions=c.absolute_positions,
        position_numbering=position_numbering(c) if c.absolute_positions else "from_zero",
        embedding_projection=c.embedding_projection,
        rotary_theta=c.rope_theta, local_rotary_theta=c.local_rope_theta,
        layer_windows=[c.layer_window(l) for l in layers],
        relative_attention=bool(c.relative_attention), position_buckets=c.position_buckets,
        max_relative_positions=c.max_relative_positions, pos_att_type=list(c.pos_att_type),
        share_att_key=c.share_att_key, norm_rel_ebd=c.norm_rel_ebd,
        pooling=c.pooling, pooler_act=c.pooler_act, pooler_dropout=c.pooler_dropout, pooler_bias=c.pooler_bias,
        pooler_norm=c.pooler_norm,
    )
    out.update({k: labels[k] for k in LABEL_KEYS if labels.get(k) is not None})
    return out


def tokenizer_class(model) -> str | None:
    """The tokenizer class of the model's source (its tokenizer_config.json, else its config): recorded in
    config.json, since transformers 4.x pipelines load a tokenizer for a custom model_type only when the
    config names one."""
    from .exporting import tokenizer_dir

    source = tokenizer_dir(model)
    file = os.path.join(source, "tokenizer_config.json") if source else None
    if file and os.path.isfile(file):
        try:
            with open(file, encoding="utf-8") as f:
                name = json.load(f).get("tokenizer_class")
        except (OSError, ValueError, AttributeError):
            name = None
        if isinstance(name, str):
            return name
    name = model.config.hf_config.get("tokenizer_class")
    return name if isinstance(name, str) else None


def compact_tensors(model) -> dict[str, torch.Tensor]:
    """The model's parameters as they are stored (our names, compact shapes), contiguous, on the CPU."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def copy_template(directory: str) -> None:
    shutil.copyfile(TEMPLATE, os.path.join(directory, MODELING_FILE))


def load_template():
    """The template module (hf_modeling/modeling_fastticket.py), imported once under a private name."""
    name = "fastticket_hf_modeling_template"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TEMPLATE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def plain_torch_model(model, labels: dict):
    """The template's FastTicketForSequenceClassification holding `model`'s weights (eval mode, same device and
    dtype): plain torch ops only, what ONNX exports and the latency command times."""
    template = load_template()
    config = template.FastTicketConfig(**hf_compact_config(model.config, labels))
    weight = model.embeddings.word.weight
    with torch.device("meta"):
        plain = getattr(template, MODEL_CLASS)(config)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    return plain.to(device=weight.device).eval()
