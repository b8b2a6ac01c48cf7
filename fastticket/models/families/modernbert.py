"""ModernBERT: pre-norm blocks (LayerNorm before each sublayer, a final norm; layer 0's attention norm is the
identity: the embeddings end with a norm), rotary positions with one base for global and one for local
layers, a sliding window (|t − s| <= local_attention // 2) on the local layers, a GeGLU feed-forward
(Wi = [input; gate], act(input) * gate), no biases unless attention_bias / mlp_bias / norm_bias say so.
Its fused Wqkv is split into q, k, v on load and fused again on export. The head pools (the first token, or
the mean over real tokens) and runs the pre-trained prediction head (dense, act, norm) — kept when the
checkpoint has it — then dropout and the classifier.
"""

from __future__ import annotations

from .base import Family, WeightNames, linear_names, refuse

LAYER_TYPES = ("full_attention", "sliding_attention")
POOLING = ("cls", "mean")
GLOBAL_THETA, LOCAL_THETA = 160_000.0, 10_000.0  # HF's defaults


class ModernBertFamily(Family):
    name = "modernbert"
    model_types = ("modernbert",)
    architectures = {"modernbert": "ModernBertForSequenceClassification"}
    base_prefix = "model"
    anchor = "embeddings.tok_embeddings.weight"
    has_pretrained_pooler = True
    transformers_class = "ModernBertConfig"
    variable = frozenset({"attention_bias", "mlp_bias", "norm_bias", "pooling", "pooler_act", "pooler_bias", "rope_theta",
                          "local_rope_theta"})
    rotary = True

    def defaults(self, config) -> dict:
        return {**super().defaults(config), "pre_norm": True, "first_attention_norm": False, "attention_bias": False,
                "mlp_bias": False, "norm_bias": False, "glu": True, "absolute_positions": False, "pooler_act": "gelu",
                "pooler_bias": False, "pooler_norm": True, "rope_theta": GLOBAL_THETA, "local_rope_theta": LOCAL_THETA}

    def check(self, config) -> None:
        super().check(config)
        if config.type_vocab_size:
            refuse("type_vocab_size (family 'modernbert')", config.type_vocab_size, "0 (ModernBERT has no token types)")
        if config.rope_theta is None or config.local_rope_theta is None:
            refuse("rope_theta/local_rope_theta (family 'modernbert')", (config.rope_theta, config.local_rope_theta),
                   "two positive numbers")
        windows = {w for w in (config.layer_windows or []) if w is not None}
        if len(windows) > 1:
            refuse("layer_windows (family 'modernbert')", config.layer_windows, "one window size for every local layer")
        if config.pooler_dropout == "task":
            refuse("pooler_dropout (family 'modernbert')", "task", "0.0")

    def config_kwargs(self, c: dict) -> dict:
        hidden, heads, layers = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
        if hidden % heads:
            refuse("num_attention_heads", heads, f"a divisor of hidden_size={hidden}")
        if c.get("head_dim") not in (None, hidden // heads):
            refuse("head_dim", c["head_dim"], f"hidden_size / num_attention_heads = {hidden // heads}")
        pooling = c.get("classifier_pooling", "cls")
        if pooling not in POOLING:
            refuse("classifier_pooling", pooling, f"one of {POOLING}")
        window = int(c.get("local_attention", 128)) // 2
        global_theta, local_theta = _rope_thetas(c)
        return dict(
            vocab_size=c["vocab_size"], hidden_size=hidden, num_layers=layers, num_heads=heads,
            intermediate_size=c["intermediate_size"], max_position_embeddings=c.get("max_position_embeddings", 8192),
            type_vocab_size=0, hidden_act=c.get("hidden_activation", "gelu"), layer_norm_eps=c.get("norm_eps", 1e-5),
            hidden_dropout=float(c.get("embedding_dropout", 0.0)), attention_dropout=float(c.get("attention_dropout", 0.0)),
            output_dropout=float(c.get("attention_dropout", 0.0)), ffn_dropout=0.0,
            ffn_inner_dropout=float(c.get("mlp_dropout", 0.0)), classifier_dropout=float(c.get("classifier_dropout", 0.0)),
            pad_token_id=c.get("pad_token_id") or 0, initializer_range=c.get("initializer_range", 0.02),
            attention_bias=bool(c.get("attention_bias", False)), mlp_bias=bool(c.get("mlp_bias", False)),
            norm_bias=bool(c.get("norm_bias", False)), rope_theta=global_theta, local_rope_theta=local_theta,
            layer_windows=[window if t == "sliding_attention" else None for t in _layer_types(c, layers)],
            pooling=pooling, pooler_act=c.get("classifier_activation", "gelu"), pooler_bias=bool(c.get("classifier_bias", False)),
        )

    def hf_config(self, config) -> dict:
        windows = config.layer_windows or [None] * config.num_layers
        local = next((w for w in windows if w is not None), None)
        types = ["full_attention" if w is None else "sliding_attention" for w in windows]
        out = dict(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings, hidden_activation=config.hidden_act,
            norm_eps=config.layer_norm_eps, embedding_dropout=config.hidden_dropout,
            attention_dropout=config.attention_dropout, mlp_dropout=config.ffn_inner_dropout,
            classifier_dropout=config.task_dropout, pad_token_id=config.pad_token_id,
            initializer_range=config.initializer_range, attention_bias=config.attention_bias, mlp_bias=config.mlp_bias,
            norm_bias=config.norm_bias, layer_types=types, classifier_pooling=config.pooling,
            classifier_activation=config.pooler_act, classifier_bias=config.pooler_bias,
            global_rope_theta=config.rope_theta, local_rope_theta=config.local_rope_theta,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": config.rope_theta},
                             "sliding_attention": {"rope_type": "default", "rope_theta": config.local_rope_theta}},
        )
        if local is not None:
            out["local_attention"] = 2 * local
        every = _every_n(types)  # transformers 4.48-4.5x read this instead of layer_types
        if every is not None:
            out["global_attn_every_n_layers"] = every
        return out

    def encoder_weights(self, config) -> WeightNames:
        names = linear_names("embeddings.word", "embeddings.tok_embeddings", bias=False)
        names += linear_names("embeddings.norm", "embeddings.norm", config.norm_bias)
        for i in range(config.num_layers):
            ours, theirs = f"layers.{i}.", f"layers.{i}."
            if i > 0 or config.first_attention_norm:
                names += linear_names(f"{ours}attention.norm", f"{theirs}attn_norm", config.norm_bias)
            for p in ("weight", "bias") if config.attention_bias else ("weight",):
                names.append((tuple(f"{ours}attention.{x}.{p}" for x in "qkv"), f"{theirs}attn.Wqkv.{p}"))
            names += linear_names(f"{ours}attention.o", f"{theirs}attn.Wo", config.attention_bias)
            names += linear_names(f"{ours}ffn.norm", f"{theirs}mlp_norm", config.norm_bias)
            for p in ("weight", "bias") if config.mlp_bias else ("weight",):
                names.append(((f"{ours}ffn.up.{p}", f"{ours}ffn.gate.{p}"), f"{theirs}mlp.Wi.{p}"))
            names += linear_names(f"{ours}ffn.down", f"{theirs}mlp.Wo", config.mlp_bias)
        return names + linear_names("final_norm", "final_norm", config.norm_bias)

    def pooler_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.dense", "head.dense", config.pooler_bias) + linear_names("head.norm", "head.norm", config.norm_bias)

    def classifier_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.out", "classifier")


def _layer_types(c: dict, layers: int) -> list[str]:
    """layer_types (transformers 5) or the pattern of global_attn_every_n_layers (4.48-4.5x: layer i is global
    when i % n == 0); an unknown layer type is refused by name."""
    types = c.get("layer_types")
    if types is None:
        every = int(c.get("global_attn_every_n_layers", 3))
        if every < 1:
            refuse("global_attn_every_n_layers", every, "an integer >= 1")
        types = ["sliding_attention" if i % every else "full_attention" for i in range(layers)]
    types = list(types)
    if len(types) != layers:
        refuse("layer_types", types, f"one entry per layer ({layers})")
    for t in types:
        if t not in LAYER_TYPES:
            refuse("layer_types entry", t, f"one of {LAYER_TYPES}")
    return types


def _rope_thetas(c: dict) -> tuple[float, float]:
    """(global, local) rotary bases from rope_parameters (transformers 5) or global_/local_rope_theta (4.x);
    only the default RoPE (no scaling) is implemented."""
    params = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling")
    if scaling:
        refuse("rope_scaling", scaling, "None (plain RoPE)")
    thetas = []
    for layer_type, old_key, default in (("full_attention", "global_rope_theta", GLOBAL_THETA),
                                         ("sliding_attention", "local_rope_theta", LOCAL_THETA)):
        p = params.get(layer_type) or {}
        if p.get("rope_type", "default") != "default":
            refuse(f"rope_parameters[{layer_type!r}]['rope_type']", p["rope_type"], "'default'")
        if p.get("partial_rotary_factor", 1.0) != 1.0:
            refuse(f"rope_parameters[{layer_type!r}]['partial_rotary_factor']", p["partial_rotary_factor"], "1.0")
        thetas.append(float(p.get("rope_theta", c.get(old_key, default))))
    return thetas[0], thetas[1]


def _every_n(types: list[str]) -> int | None:
    """n when layer i is global exactly when i % n == 0, else None."""
    for n in range(1, len(types) + 1):
        if all((t == "full_attention") == (i % n == 0) for i, t in enumerate(types)):
            return n
    return None


MODERNBERT = ModernBertFamily()
