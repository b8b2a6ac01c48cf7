"""EncoderConfig: everything our encoder needs, read from a Hugging Face config by its family's adapter.

The encoder reads only these fields, never a family's name. Fields marked "family" default to None and are
filled by the family (families/<name>.py, `defaults`) when a config is built by hand; a config read from
Hugging Face gets them from the family's `config_kwargs`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .families import FAMILIES, MODEL_TYPES, family_of_model_type, get_family
from .families.base import hf_num_labels

__all__ = ["EncoderConfig", "FAMILIES", "MODEL_TYPES"]
_POOLING = ("cls", "mean")
_PROJECTIONS = ("after_norm", "before_norm")


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
    embedding_size: int | None = None  # embeddings narrower than hidden, then projected (ELECTRA, DeBERTa)
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1  # the embeddings' dropout, and the default of output/ffn/task dropout
    attention_dropout: float = 0.1  # on the attention probabilities
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
    # Neuron-level FFN pruning: per layer, the ORIGINAL indices of the intermediate neurons a kept FFN holds
    # (None = all intermediate_size of them). A pruned FFN's row is ignored (write []).
    kept_neurons: list[list[int]] | None = None
    # --- the block (family)
    pre_norm: bool | None = None  # LayerNorm before each sublayer, residual after, a final norm (ModernBERT)
    first_attention_norm: bool | None = None  # False: a pre-norm layer 0 has no attention norm
    attention_bias: bool | None = None  # Q/K/V/W_O biases
    mlp_bias: bool | None = None  # FFN biases
    norm_bias: bool | None = None  # LayerNorm biases
    glu: bool | None = None  # FFN inner activation act(up x) * (gate x) (GeGLU with gelu)
    output_dropout: float | None = None  # after W_O
    ffn_dropout: float | None = None  # on the FFN output, before the mask ν
    ffn_inner_dropout: float = 0.0  # on the FFN inner activation
    # --- positions (family)
    absolute_positions: bool | None = None  # a learned absolute position table in the embeddings
    embedding_projection: str | None = None  # "after_norm" (ELECTRA, with bias) or "before_norm" (DeBERTa, no bias)
    rope_theta: float | None = None  # rotary positions (global layers); None: none
    local_rope_theta: float | None = None  # rotary base of the windowed (local) layers
    layer_windows: list | None = None  # per layer None (global) or w: query t sees keys |t - s| <= w
    relative_attention: bool | None = None  # DeBERTa's disentangled attention
    position_buckets: int = -1
    max_relative_positions: int = -1
    pos_att_type: list = field(default_factory=list)  # subset of ["c2p", "p2c"]
    share_att_key: bool = False
    norm_rel_ebd: bool = False  # LayerNorm on the relative embeddings
    # --- the classification head (family): pool -> dense -> act [-> norm] -> dropout -> out
    pooling: str | None = None  # "cls" (first token) or "mean" (over real tokens)
    pooler_act: str | None = None
    pooler_dropout: float | str | None = None  # before the dense: a rate, or "task" (the task dropout module)
    pooler_bias: bool | None = None
    pooler_norm: bool | None = None
    pretrained_pooler: bool | None = None  # set by load_model: whether the checkpoint had a pre-trained pooler

    def __post_init__(self):
        family = get_family(self.family)
        for name, value in family.defaults(self).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels={self.num_labels}; allowed: 1 (regression) or >= 2 (classification)")
        family.check(self)
        self._check_options()
        self._check_compact()

    def _check_options(self) -> None:
        if self.pooling not in _POOLING:
            raise ValueError(f"pooling {self.pooling!r} is not supported; allowed: {_POOLING}")
        if self.embedding_projection not in _PROJECTIONS:
            raise ValueError(f"embedding_projection {self.embedding_projection!r}; allowed: {_PROJECTIONS}")
        if not self.pre_norm and not self.norm_bias:
            raise ValueError("norm_bias=False is supported in pre-norm blocks only (pre_norm=True)")
        if self.layer_windows is not None:
            windows = list(self.layer_windows)
            if len(windows) != self.num_layers or any(w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 0)
                                                       for w in windows):
                raise ValueError(f"layer_windows={windows!r}; allowed: one entry per layer ({self.num_layers}), None or an integer >= 0")
            self.layer_windows = windows
        for theta in (self.rope_theta, self.local_rope_theta):
            if theta is not None and not (isinstance(theta, (int, float)) and 0 < theta < math.inf):
                raise ValueError(f"rope theta {theta!r} is not supported; allowed: a positive number")
        if self.relative_attention and (self.position_buckets > 0) and self.position_buckets < 2:
            raise ValueError(f"position_buckets={self.position_buckets}; allowed: -1 (none) or an integer >= 2")

    def _check_compact(self) -> None:
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
        if self.kept_neurons is not None:
            kept = self.kept_neurons
            if not isinstance(kept, (list, tuple)) or len(kept) != self.num_layers:
                raise ValueError(f"kept_neurons must be a list of {self.num_layers} lists (one per layer); got {kept!r}")
            rows = []
            for l, row in enumerate(kept):
                row = [int(i) for i in row]
                if any(not 0 <= i < self.intermediate_size for i in row) or row != sorted(set(row)):
                    raise ValueError(f"kept_neurons[{l}] must hold increasing, distinct neuron indices in "
                                     f"[0, {self.intermediate_size})")
                if not row and self.layer_has_ffn(l):
                    raise ValueError(f"kept_neurons[{l}] is empty but layer {l} keeps its FFN; allowed: at least one "
                                     f"neuron, or kept_ffn[{l}] = False")
                rows.append(row)
            self.kept_neurons = rows

    @property
    def family_adapter(self):
        """The family object (families/<name>.py) that knows this config's Hugging Face family."""
        return get_family(self.family)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def softmax_scale(self) -> float:
        """1/sqrt(d): scores scale; DeBERTa divides by sqrt(d·(1 + len(pos_att_type))) (its c2p/p2c terms too)."""
        return 1.0 / math.sqrt(self.head_dim * (1 + len(self.pos_att_type)))

    def layer_window(self, layer: int) -> int | None:
        return None if self.layer_windows is None else self.layer_windows[layer]

    def layer_rope_theta(self, layer: int) -> float | None:
        """The rotary base of layer `layer`: the local one on windowed layers, else the global one."""
        if self.rope_theta is None:
            return None
        return self.local_rope_theta if self.layer_window(layer) is not None else self.rope_theta

    @property
    def relative_span(self) -> int:
        """DeBERTa: half the number of relative-embedding rows (position_buckets, else max_relative_positions)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions

    @property
    def is_compact(self) -> bool:
        """True for a physically pruned model (some head or FFN not present at all)."""
        return self.kept_heads is not None or self.kept_ffn is not None or self.kept_neurons is not None

    def layer_heads(self, layer: int) -> list[int]:
        """The original indices of the heads layer `layer` holds."""
        return list(range(self.num_heads)) if self.kept_heads is None else list(self.kept_heads[layer])

    def layer_has_ffn(self, layer: int) -> bool:
        return True if self.kept_ffn is None else self.kept_ffn[layer]

    def layer_neurons(self, layer: int) -> list[int]:
        """The original indices of the intermediate neurons layer `layer`'s FFN holds ([] when it is pruned)."""
        if not self.layer_has_ffn(layer):
            return []
        return list(range(self.intermediate_size)) if self.kept_neurons is None else list(self.kept_neurons[layer])

    def layer_ffn_width(self, layer: int) -> int:
        """The intermediate width layer `layer`'s FFN holds: 0 when pruned, fewer than intermediate_size when
        neurons are pruned."""
        if not self.layer_has_ffn(layer):
            return 0
        return self.intermediate_size if self.kept_neurons is None else len(self.kept_neurons[layer])

    def full(self) -> "EncoderConfig":
        """The same model with every head and FFN present (the layout masks and tickets refer to)."""
        return replace(self, kept_heads=None, kept_ffn=None, kept_neurons=None)

    @property
    def max_length(self) -> int:
        """The longest input the model takes (RoBERTa's positions start after padding_idx, ...): the family's rule."""
        return self.family_adapter.max_length(self)

    @property
    def pooler_is_pretrained(self) -> bool:
        """Whether head.dense (+ head.norm) is a pre-trained pooler rather than part of the task layer."""
        return self.family_adapter.pooler_is_pretrained(self)

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
        """From a transformers PretrainedConfig (or its to_dict()), read by the family of its model_type."""
        c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        family = family_of_model_type(c.get("model_type"))
        labels = num_labels if num_labels is not None else hf_num_labels(c)
        return cls(family=family.name, **family.config_kwargs(c), num_labels=labels, hf_model_type=c["model_type"],
                   hf_config=c)
