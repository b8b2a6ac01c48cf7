"""Parameter names: ours <-> Hugging Face's, per family. Used to load checkpoints (and to export them)."""

from __future__ import annotations

from .config import EncoderConfig

_BASE_PREFIX = {"bert": "bert", "roberta": "roberta", "electra": "electra", "distilbert": "distilbert"}


def encoder_pairs(config: EncoderConfig) -> list[tuple[str, str]]:
    """(our name, HF name without the base-model prefix) for every encoder parameter."""
    wb = ("weight", "bias")
    if config.family == "distilbert":
        pairs = [("embeddings.word.weight", "embeddings.word_embeddings.weight"),
                 ("embeddings.position.weight", "embeddings.position_embeddings.weight")]
        pairs += [(f"embeddings.norm.{p}", f"embeddings.LayerNorm.{p}") for p in wb]
        layer = {"attention.q": "attention.q_lin", "attention.k": "attention.k_lin", "attention.v": "attention.v_lin",
                 "attention.o": "attention.out_lin", "attention.norm": "sa_layer_norm", "ffn.up": "ffn.lin1",
                 "ffn.down": "ffn.lin2", "ffn.norm": "output_layer_norm"}
        stem = "transformer.layer"
    else:
        pairs = [("embeddings.word.weight", "embeddings.word_embeddings.weight"),
                 ("embeddings.position.weight", "embeddings.position_embeddings.weight"),
                 ("embeddings.token_type.weight", "embeddings.token_type_embeddings.weight")]
        pairs += [(f"embeddings.norm.{p}", f"embeddings.LayerNorm.{p}") for p in wb]
        if config.embedding_size and config.embedding_size != config.hidden_size:
            pairs += [(f"embeddings.project.{p}", f"embeddings_project.{p}") for p in wb]
        layer = {"attention.q": "attention.self.query", "attention.k": "attention.self.key",
                 "attention.v": "attention.self.value", "attention.o": "attention.output.dense",
                 "attention.norm": "attention.output.LayerNorm", "ffn.up": "intermediate.dense",
                 "ffn.down": "output.dense", "ffn.norm": "output.LayerNorm"}
        stem = "encoder.layer"
    for i in range(config.num_layers):
        for ours, theirs in layer.items():
            pairs += [(f"layers.{i}.{ours}.{p}", f"{stem}.{i}.{theirs}.{p}") for p in wb]
    return pairs


def head_pairs(config: EncoderConfig, prefix: str) -> list[tuple[str, str]]:
    """(our name, full HF name) for the task head; BERT's pooler sits under the base prefix ('' or 'bert.')."""
    dense, out = {
        "bert": (f"{prefix}pooler.dense", "classifier"),
        "roberta": ("classifier.dense", "classifier.out_proj"),
        "electra": ("classifier.dense", "classifier.out_proj"),
        "distilbert": ("pre_classifier", "classifier"),
    }[config.family]
    return [(f"head.dense.{p}", f"{dense}.{p}") for p in ("weight", "bias")] + [
        (f"head.out.{p}", f"{out}.{p}") for p in ("weight", "bias")
    ]


def base_prefix(config: EncoderConfig) -> str:
    return _BASE_PREFIX[config.family]


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


def find_base_prefix(state: dict) -> str:
    """'' for a bare base model (BertModel), 'bert.' etc. for task models; from the word embeddings' key."""
    anchor = "embeddings.word_embeddings.weight"
    for name in state:
        if name.endswith(anchor):
            return name[: -len(anchor)]
    raise ValueError("checkpoint has no '*embeddings.word_embeddings.weight': not a supported encoder checkpoint")
