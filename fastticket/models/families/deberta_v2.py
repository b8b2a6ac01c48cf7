"""DeBERTa-v2 / v3 (model_type deberta-v2): post-norm blocks with disentangled attention.

Scores are (q·k + c2p + p2c) / sqrt(d·(1 + len(pos_att_type))), HF's scale: c2p[i, j] = q_i · Kr[δ(i, j)],
p2c[i, j] = k_j · Qr[δ(i, j)], where δ is the (log-bucketed) relative distance i − j shifted into the
relative-embedding table, and Kr / Qr are the relative embeddings (LayerNorm-ed when norm_rel_ebd has
layer_norm) projected by the layer's key / query projection (share_att_key) or by its own pos_key_proj /
pos_query_proj. Absolute positions are added to the embeddings only with position_biased_input; an
embedding_size narrower than hidden is projected (no bias) before the embedding LayerNorm. The head is the
ContextPooler (dropout pooler_dropout, dense, pooler_hidden_act) — pre-trained when the checkpoint has it —
then dropout (cls_dropout) and the classifier.
"""

from __future__ import annotations

from .base import Family, WeightNames, layer_names, linear_names, refuse

_ATT_TYPES = ("c2p", "p2c")


class DebertaV2Family(Family):
    name = "deberta-v2"
    model_types = ("deberta-v2",)
    architectures = {"deberta-v2": "DebertaV2ForSequenceClassification"}
    base_prefix = "deberta"
    has_pretrained_pooler = True
    transformers_class = "DebertaV2Config"
    variable = frozenset({"absolute_positions", "relative_attention", "pooler_act"})
    relative = True

    def defaults(self, config) -> dict:
        return {**super().defaults(config), "embedding_projection": "before_norm", "pooler_act": "gelu",
                "relative_attention": False}

    def check(self, config) -> None:
        super().check(config)
        if not config.relative_attention and not config.absolute_positions:
            refuse("relative_attention=False with position_biased_input", False,
                   "at least one of relative_attention and position_biased_input (the model would have no positions)")
        unknown = [t for t in config.pos_att_type if t not in _ATT_TYPES]
        if unknown or len(set(config.pos_att_type)) != len(config.pos_att_type):
            refuse("pos_att_type", config.pos_att_type, f"distinct entries of {_ATT_TYPES}")
        if config.relative_attention and config.max_relative_positions < 1:
            refuse("max_relative_positions", config.max_relative_positions, "an integer >= 1 (or -1 in the HF config)")
        if config.pooler_dropout == "task":
            refuse("pooler_dropout (family 'deberta-v2')", "task", "a rate in [0, 1)")

    def config_kwargs(self, c: dict) -> dict:
        _refuse_unsupported(c)
        hidden, heads = c["hidden_size"], c["num_attention_heads"]
        att_type = c.get("pos_att_type") or []
        if isinstance(att_type, str):  # the old "p2c|c2p" form
            att_type = [t.strip() for t in att_type.lower().split("|")]
        norm_rel = [t.strip() for t in str(c.get("norm_rel_ebd") or "none").lower().split("|")]
        if any(t not in ("none", "layer_norm") for t in norm_rel):
            refuse("norm_rel_ebd", c.get("norm_rel_ebd"), "'none' or 'layer_norm'")
        max_pos = c.get("max_position_embeddings", 512)
        max_rel = c.get("max_relative_positions", -1)
        return dict(
            vocab_size=c["vocab_size"], hidden_size=hidden, num_layers=c["num_hidden_layers"], num_heads=heads,
            intermediate_size=c["intermediate_size"], max_position_embeddings=max_pos,
            type_vocab_size=c.get("type_vocab_size", 0), embedding_size=c.get("embedding_size") or hidden,
            hidden_act=c.get("hidden_act", "gelu"), layer_norm_eps=c.get("layer_norm_eps", 1e-7),
            hidden_dropout=c.get("hidden_dropout_prob", 0.1), attention_dropout=c.get("attention_probs_dropout_prob", 0.1),
            classifier_dropout=c.get("cls_dropout"), pad_token_id=c.get("pad_token_id") or 0,
            initializer_range=c.get("initializer_range", 0.02),
            absolute_positions=bool(c.get("position_biased_input", True)),
            relative_attention=bool(c.get("relative_attention", False)), position_buckets=int(c.get("position_buckets", -1)),
            max_relative_positions=max_rel if max_rel >= 1 else max_pos, pos_att_type=list(att_type),
            share_att_key=bool(c.get("share_att_key", False)), norm_rel_ebd="layer_norm" in norm_rel,
            pooler_act=c.get("pooler_hidden_act", "gelu"), pooler_dropout=float(c.get("pooler_dropout", 0.0)),
        )

    def hf_config(self, config) -> dict:
        return dict(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
            embedding_size=config.embedding_size or config.hidden_size, hidden_act=config.hidden_act,
            layer_norm_eps=config.layer_norm_eps, hidden_dropout_prob=config.hidden_dropout,
            attention_probs_dropout_prob=config.attention_dropout, cls_dropout=config.classifier_dropout,
            pad_token_id=config.pad_token_id, initializer_range=config.initializer_range,
            position_biased_input=config.absolute_positions, relative_attention=config.relative_attention,
            position_buckets=config.position_buckets, max_relative_positions=config.max_relative_positions,
            pos_att_type=list(config.pos_att_type), share_att_key=config.share_att_key,
            norm_rel_ebd="layer_norm" if config.norm_rel_ebd else "none", pooler_hidden_size=config.hidden_size,
            pooler_hidden_act=config.pooler_act, pooler_dropout=config.pooler_dropout, conv_kernel_size=0,
        )

    def encoder_weights(self, config) -> WeightNames:
        names = linear_names("embeddings.word", "embeddings.word_embeddings", bias=False)
        if config.absolute_positions:
            names += linear_names("embeddings.position", "embeddings.position_embeddings", bias=False)
        if config.type_vocab_size > 0:
            names += linear_names("embeddings.token_type", "embeddings.token_type_embeddings", bias=False)
        if config.embedding_size and config.embedding_size != config.hidden_size:
            names += linear_names("embeddings.project", "embeddings.embed_proj", bias=False)
        names += linear_names("embeddings.norm", "embeddings.LayerNorm")
        if config.relative_attention:
            names += linear_names("positions.relative", "encoder.rel_embeddings", bias=False)
            if config.norm_rel_ebd:
                names += linear_names("positions.norm", "encoder.LayerNorm")
        layer = {"attention.q": ("attention.self.query_proj", True), "attention.k": ("attention.self.key_proj", True),
                 "attention.v": ("attention.self.value_proj", True)}
        if config.relative_attention and not config.share_att_key:
            if "c2p" in config.pos_att_type:
                layer["attention.pos_k"] = ("attention.self.pos_key_proj", True)
            if "p2c" in config.pos_att_type:
                layer["attention.pos_q"] = ("attention.self.pos_query_proj", True)
        layer.update({"attention.o": ("attention.output.dense", True), "attention.norm": ("attention.output.LayerNorm", True),
                      "ffn.up": ("intermediate.dense", True), "ffn.down": ("output.dense", True),
                      "ffn.norm": ("output.LayerNorm", True)})
        return names + layer_names(config.num_layers, "encoder.layer", layer)

    def pooler_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.dense", "pooler.dense")

    def classifier_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.out", "classifier")


def _refuse_unsupported(c: dict) -> None:
    """HF DeBERTa-v2 options the encoder does not implement, refused by name."""
    if (c.get("conv_kernel_size") or 0) > 0:
        refuse("conv_kernel_size", c["conv_kernel_size"], "0 (the convolution after the first layer is not implemented)")
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    if hidden % heads:
        refuse("num_attention_heads", heads, f"a divisor of hidden_size={hidden}")
    head_size = c.get("attention_head_size")
    if head_size is not None and head_size != hidden // heads:
        refuse("attention_head_size", head_size, f"hidden_size / num_attention_heads = {hidden // heads}")
    pooler = c.get("pooler_hidden_size")
    if pooler is not None and pooler != hidden:
        refuse("pooler_hidden_size", pooler, f"hidden_size={hidden}")


DEBERTA_V2 = DebertaV2Family()
