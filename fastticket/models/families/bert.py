"""BERT (and MiniLM, whose checkpoints are BERT): post-norm blocks, absolute positions, a tanh pooler that
is pre-trained (next-sentence prediction) and kept when the task layer is re-initialized."""

from __future__ import annotations

from .base import Family, WeightNames, layer_names, linear_names, refuse

# our sublayer names <-> BERT's, all with bias
_LAYER = {"attention.q": ("attention.self.query", True), "attention.k": ("attention.self.key", True),
          "attention.v": ("attention.self.value", True), "attention.o": ("attention.output.dense", True),
          "attention.norm": ("attention.output.LayerNorm", True), "ffn.up": ("intermediate.dense", True),
          "ffn.down": ("output.dense", True), "ffn.norm": ("output.LayerNorm", True)}


class BertFamily(Family):
    name = "bert"
    model_types = ("bert",)
    architectures = {"bert": "BertForSequenceClassification"}
    base_prefix = "bert"
    has_pretrained_pooler = True
    transformers_class = "BertConfig"

    def config_kwargs(self, c: dict) -> dict:
        positions = c.get("position_embedding_type") or "absolute"  # transformers 4.x; 5.x has absolute only
        if positions != "absolute":
            refuse("position_embedding_type", positions, "'absolute'")
        return dict(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
            max_position_embeddings=c.get("max_position_embeddings", 512), type_vocab_size=c.get("type_vocab_size", 2),
            hidden_act=c.get("hidden_act", "gelu"), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
            hidden_dropout=c.get("hidden_dropout_prob", 0.1), attention_dropout=c.get("attention_probs_dropout_prob", 0.1),
            classifier_dropout=c.get("classifier_dropout"), pad_token_id=c.get("pad_token_id") or 0,
            initializer_range=c.get("initializer_range", 0.02),
        )

    def hf_config(self, config) -> dict:
        return dict(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
            hidden_act=config.hidden_act, layer_norm_eps=config.layer_norm_eps, hidden_dropout_prob=config.hidden_dropout,
            attention_probs_dropout_prob=config.attention_dropout, classifier_dropout=config.classifier_dropout,
            pad_token_id=config.pad_token_id, initializer_range=config.initializer_range,
        )

    def embedding_weights(self, config) -> WeightNames:
        names = linear_names("embeddings.word", "embeddings.word_embeddings", bias=False)
        names += linear_names("embeddings.position", "embeddings.position_embeddings", bias=False)
        if config.type_vocab_size > 0:
            names += linear_names("embeddings.token_type", "embeddings.token_type_embeddings", bias=False)
        return names + linear_names("embeddings.norm", "embeddings.LayerNorm")

    def encoder_weights(self, config) -> WeightNames:
        return self.embedding_weights(config) + layer_names(config.num_layers, "encoder.layer", _LAYER)

    def pooler_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.dense", f"{prefix}pooler.dense")

    def classifier_weights(self, config, prefix: str) -> WeightNames:
        return linear_names("head.out", "classifier")


BERT = BertFamily()
