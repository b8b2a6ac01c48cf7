"""Small models and datasets for tests (no Hugging Face modeling code)."""

import torch


def tiny_config(family="bert", num_labels=3, layers=3, heads=4, **overrides):
    from fastticket.models import EncoderConfig

    kw = dict(family=family, vocab_size=50, hidden_size=8 * heads, num_layers=layers, num_heads=heads,
              intermediate_size=37, max_position_embeddings=64, num_labels=num_labels)
    kw.update(overrides)
    return EncoderConfig(**kw)


def tiny_model(seed=0, dtype=torch.float32, **kw):
    """A randomly initialized TicketModel (no HF involved), eval mode."""
    from fastticket.models import TicketModel

    torch.manual_seed(seed)
    return TicketModel(tiny_config(**kw)).to(dtype).eval()


def tokenized_dataset(n=11, seed=0, num_labels=3, vocab=50, min_len=2, max_len=13, pairs=True):
    """datasets.Dataset of random token ids with varied lengths (so batches are padded)."""
    import datasets

    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "token_type_ids": [], "labels": []}
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        rows["input_ids"].append(torch.randint(1, vocab, (length,), generator=g).tolist())
        split = length // 2 if pairs else length
        rows["token_type_ids"].append([0] * split + [1] * (length - split))
        if num_labels == 1:
            rows["labels"].append(float(torch.randn(1, generator=g)))
        else:
            rows["labels"].append(int(torch.randint(0, num_labels, (1,), generator=g)))
    return datasets.Dataset.from_dict(rows)

