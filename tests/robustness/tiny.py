"""A tiny Hugging Face BERT checkpoint with its own WordPiece tokenizer, and tiny local task files: what the
CLI needs to run end to end in a few seconds (the embedded MiniLM is 20x larger)."""

import os

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "film", "plot", "actor", "the", "a", "was", "is", "very", "not"]
POSITIVE, NEGATIVE = WORDS[:3], WORDS[3:6]


def write_checkpoint(path, max_positions: int = 32, seed: int = 0) -> str:
    """A 2-layer, 4-head BERT (hidden 16) with a 25-token vocabulary, saved with its tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    os.makedirs(path, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + list(".,!?")
    ids = {w: i for i, w in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))  # built directly: works with transformers 4.4x and 5.x
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]",
                            model_input_names=["input_ids", "token_type_ids", "attention_mask"]).save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=24, max_position_embeddings=max_positions, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(path)
    return str(path)


def sentences(n: int, seed: int):
    """n (text, label) pairs: label 1 when a positive word is in the text."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(WORDS[6:]) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


def write_task(directory, n_train: int = 24, n_dev: int = 30, header=("text", "label")) -> str:
    """DIR/train.csv and DIR/dev.csv with a text and a 0/1 label column."""
    os.makedirs(directory, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("dev", n_dev, 2)):
        lines = [",".join(header)] + [f"{text},{label}" for text, label in sentences(n, seed)]
        with open(os.path.join(directory, f"{split}.csv"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return str(directory)
