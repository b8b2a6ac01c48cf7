"""DistilBERT: BERT's blocks under other names, no token types, no dropout after W_O; the head's
pre_classifier (ReLU) is task layer."""

from __future__ import annotations

from .base import Family, WeightNames, layer_names, linear_names

_LAYER = {"attention.q": ("attention.q_lin", True), "attention.k": ("attention.k_lin", True),
          "attention.v": ("attention.v_lin", True), "attention.o": ("attention.out_lin", True),
          "attention.norm": ("sa_layer_norm", True), "ffn.up": ("ffn.lin1", True), "ffn.down": ("ffn.lin2", True),
          "ffn.norm": ("output_layer_norm", True)}


class DistilBertFamily(Family):
    name = "distilbert"
    model_types = ("distilbert",)
    architectures = {"distilbert": "DistilBertForSequenceClassification"}
    base_prefix = "distilbert"
    transformers_class = "DistilBertConfig"

    def defaults(self, config) -> dict:
        return {**super().defaults(config), "output_dropout": 0.0, "pooler_act": "relu"}

    def config_kwargs(self, c: dict) -> dict:
        return dict(
            vocab_size=c["vocab_size"], hidden_size=c["dim"], num_layers=c["n_layers"], num_heads=c["n_heads"],
            intermediate_size=c["hidden_dim"], max_position_embeddings=c.get("max_position_embeddings", 512),
            type_vocab_size=0, hidden_act=c.get("activation", "gelu"), layer_norm_eps=1e-12,
            hidden_dropout=c.get("dropout", 0.1), attention_dropout=c.get("attention_dropout", 0.1),
            classifier_dropout=c.get("seq_classif_dropout", 0.2), pad_token_id=c.get("pad_token_id") or 0,
            initializer_range=c.get("initializer_range", 0.02), sinusoidal_positions=bool(c.get("sinusoidal_pos_embds", False)),
        )

    def hf_config(self, config) -> dict:
        return dict(
            vocab_size=config.vocab_size, dim=config.hidden_size, n_layers=config.num_layers, n_heads=config.num_heads,
            hidden_dim=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
            activation=config.hidden_act, dropout=config.hidden_dropout, attention_dropout=config.attention_dropout,
            seq_classif_dropout=config.task_dropout, sinusoidal_pos_embds=config.sinusoidal_positions,
            pad_token_id=config.pad_token_id, initializer_range=config.initializer_range,
        )

    def encoder_weights(self, config) -> WeightNames:
        names = linear_names("embeddings.word", "embeddings.word_embeddings", bias=False)
        names += linear_names("embeddings.position", "embeddings.position_embeddings", bias=False)
        names += linear_names("embeddings.norm", "embeddings.LayerNorm")
        return names + layer_names(config.num_layers, "transformer.layer", _LAYER)

    def pooler_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.dense", "pre_classifier")

    def classifier_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.out", "classifier")


DISTILBERT = DistilBertFamily()
