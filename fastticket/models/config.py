"""EncoderConfig: everything our encoder needs, read from a Hugging Face config of a supported family."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

FAMILIES = ("bert", "roberta", "electra", "distilbert")
# Hugging Face model_type -> our family (MiniLM checkpoints are BERT; XLM-R and CamemBERT are RoBERTa)
MODEL_TYPES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
    "electra": "electra",
    "distilbert": "distilbert",
}


@dataclass
class EncoderConfig:
    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    embedding_size: int | None = None  # ELECTRA: embeddings narrower than hidden, then projected
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None
    pad_token_id: int = 0
    initializer_range: float = 0.02
    num_labels: int = 2
    sinusoidal_positions: bool = False  # DistilBERT option; the table is stored in the weights either way
    hf_model_type: str = "bert"
    hf_config: dict = field(default_factory=dict, repr=False)  # the source config, for export
    # A physically compact model (ft.rewind): per layer, the ORIGINAL indices of the heads it keeps, and
    # whether it keeps its FFN. None = everything kept. num_heads / intermediate_size stay the originals.
    kept_heads: list[list[int]] | None = None
    kept_ffn: list[bool] | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not supported; allowed: {FAMILIES}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels={self.num_labels}; allowed: 1 (regression) or >= 2 (classification)")
        if self.kept_heads is not None:
            kept = self.kept_heads
            if not isinstance(kept, (list, tuple)) or len(kept) != self.num_layers:
                raise ValueError(f"kept_heads must be a list of {self.num_layers} lists (one per layer); got {kept!r}")
            rows = []
            for l, row in enumerate(kept):
                row = [int(h) for h in row]
                if any(not 0 <= h < self.num_heads for h in row) or row != sorted(set(row)):
                    raise ValueError(f"kept_heads[{l}]={row} must hold increasing, distinct head indices in [0, {self.num_heads})")
                rows.append(row)
            self.kept_heads = rows
        if self.kept_ffn is not None:
            if not isinstance(self.kept_ffn, (list, tuple)) or len(self.kept_ffn) != self.num_layers:
                raise ValueError(f"kept_ffn must be a list of {self.num_layers} booleans (one per layer); got {self.kept_ffn!r}")
            if not all(v in (0, 1) for v in self.kept_ffn):
                raise ValueError(f"kept_ffn may hold only booleans; got {self.kept_ffn!r}")
            self.kept_ffn = [bool(v) for v in self.kept_ffn]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def is_compact(self) -> bool:
        """True for a physically pruned model (some head or FFN not present at all)."""
        return self.kept_heads is not None or self.kept_ffn is not None

    def layer_heads(self, layer: int) -> list[int]:
        """The original indices of the heads layer `layer` holds."""
        return list(range(self.num_heads)) if self.kept_heads is None else list(self.kept_heads[layer])

    def layer_has_ffn(self, layer: int) -> bool:
        return True if self.kept_ffn is None else self.kept_ffn[layer]

    def full(self) -> "EncoderConfig":
        """The same model with every head and FFN present (the layout masks and tickets refer to)."""
        return replace(self, kept_heads=None, kept_ffn=None)

    @property
    def max_length(self) -> int:
        """The longest input the position table allows; RoBERTa's positions start after padding_idx."""
        if self.family == "roberta":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def task_dropout(self) -> float:
        return self.hidden_dropout if self.classifier_dropout is None else self.classifier_dropout

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf(cls, hf_config, num_labels: int | None = None) -> "EncoderConfig":
        """From a transformers PretrainedConfig (or its to_dict())."""
        c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        model_type = c.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not supported; allowed: {sorted(MODEL_TYPES)}")
        family = MODEL_TYPES[model_type]
        positions = c.get("position_embedding_type") or "absolute"  # transformers 4.x; 5.x has absolute only
        if positions != "absolute":
            raise ValueError(f"position_embedding_type {positions!r} is not supported; allowed: 'absolute'")
        labels = num_labels if num_labels is not None else _hf_num_labels(c)
        if family == "distilbert":
            return cls(
                family=family, vocab_size=c["vocab_size"], hidden_size=c["dim"], num_layers=c["n_layers"],
                num_heads=c["n_heads"], intermediate_size=c["hidden_dim"],
                max_position_embeddings=c.get("max_position_embeddings", 512), type_vocab_size=0,
                hidden_act=c.get("activation", "gelu"), layer_norm_eps=1e-12,
                hidden_dropout=c.get("dropout", 0.1), attention_dropout=c.get("attention_dropout", 0.1),
                classifier_dropout=c.get("seq_classif_dropout", 0.2), pad_token_id=c.get("pad_token_id") or 0,
                initializer_range=c.get("initializer_range", 0.02), num_labels=labels,
                sinusoidal_positions=bool(c.get("sinusoidal_pos_embds", False)), hf_model_type=model_type, hf_config=c,
            )
        embedding_size = c.get("embedding_size") if family == "electra" else None
        return cls(
            family=family, vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
            num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
            intermediate_size=c["intermediate_size"], max_position_embeddings=c.get("max_position_embeddings", 512),
            type_vocab_size=c.get("type_vocab_size", 2), embedding_size=embedding_size,
            hidden_act=c.get("hidden_act", "gelu"), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
            hidden_dropout=c.get("hidden_dropout_prob", 0.1), attention_dropout=c.get("attention_probs_dropout_prob", 0.1),
            classifier_dropout=c.get("classifier_dropout"), pad_token_id=c.get("pad_token_id") or 0,
            initializer_range=c.get("initializer_range", 0.02), num_labels=labels, hf_model_type=model_type, hf_config=c,
        )


def _hf_num_labels(c: dict) -> int:
    if c.get("num_labels") is not None:
        return int(c["num_labels"])
    if c.get("id2label"):
        return len(c["id2label"])
    return 2
