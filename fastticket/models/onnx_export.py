"""format="onnx": the compact model as ONNX, exported from the hf-compact modeling code (plain torch ops; the
fused ops of the encoder are custom ops that ONNX cannot express).

model.onnx takes input_ids and attention_mask (int64 [batch, sequence], both axes dynamic) and token_type_ids
where the model has more than one token type, and returns logits [batch, num_labels]. fastticket_onnx.json
records the inputs, the labels and the kept shapes. Needs the optional extra `fastticket[onnx]` (onnx,
onnxscript for torch's exporter; onnxruntime to run it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings

import torch

ONNX_FILE = "model.onnx"
META_FILE = "fastticket_onnx.json"
META_FORMAT = "fastticket.onnx"
OPSET = 18
REQUIRED = ("onnx", "onnxscript")


def require_onnx(modules: tuple[str, ...] = REQUIRED, what: str = "format 'onnx'") -> None:
    """One ValueError line, before any work, when an ONNX package is missing; `what` names what needs it."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)} (not installed); install the extra: "
                         "pip install 'fastticket[onnx]'")


def input_names(config) -> list[str]:
    """The inputs the exported graph takes: token types only where the model has more than one."""
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if config.type_vocab_size > 1 else [])


class LogitsOnly(torch.nn.Module):
    """The hf-compact model with positional inputs and the logits as the only output (what ONNX exports)."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def example_inputs(config, names: list[str], seq: int = 8) -> tuple[torch.Tensor, ...]:
    """Right-padded int64 inputs [2, T] (T >= 2 and batch 2, so that neither axis is specialized to 1)."""
    seq = max(2, min(seq, config.max_length))
    ids = torch.arange(seq).repeat(2, 1) % max(config.vocab_size - 1, 1) + 1  # [2, T]
    mask = torch.ones(2, seq, dtype=torch.long)
    mask[1, seq // 2:] = 0
    ids[mask == 0] = config.pad_token_id
    types = torch.zeros_like(ids)
    return tuple({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}[n] for n in names)


def write_onnx(model, directory: str, labels: dict) -> None:
    """Writes model.onnx and fastticket_onnx.json of TicketModel `model` into `directory`."""
    from .hf_compact import hf_compact_config, plain_torch_model

    names = input_names(model.config)
    plain = plain_torch_model(model, labels).cpu()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=model.config.max_length)
    dynamic = {name: {0: batch, 1: seq} for name in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on axis names and deprecations
        program = torch.onnx.export(LogitsOnly(plain, names), example_inputs(model.config, names), dynamo=True,
                                    input_names=names, output_names=["logits"], dynamic_shapes=dynamic,
                                    opset_version=OPSET, external_data=False, verbose=False)
    program.save(os.path.join(directory, ONNX_FILE), external_data=False)
    shapes = hf_compact_config(model.config, labels)
    meta = {"format": META_FORMAT, "onnx": ONNX_FILE, "inputs": names, "outputs": ["logits"], "opset": OPSET,
            **{k: shapes[k] for k in ("source_family", "source_model_type", "kept_heads", "ffn_widths", "id2label",
                                      "label2id") if k in shapes}}
    with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


def onnx_session(directory: str, threads: int | None = None):
    """An onnxruntime CPU session of an ONNX export and its input names."""
    require_onnx(("onnxruntime",), what="running an ONNX export")
    import onnxruntime

    with open(os.path.join(directory, META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(os.path.join(directory, meta["onnx"]), options,
                                           providers=["CPUExecutionProvider"])
    return session, list(meta["inputs"])


def onnx_logits(session, names: list[str], batch: dict) -> torch.Tensor:
    """Runs an onnxruntime session on a batch of tensors (the inputs it takes); as in transformers, a missing
    attention mask is all ones (every token real) and missing token types are zeros."""
    feed = {}
    for name in names:
        value = batch.get(name)
        if value is None:
            value = (torch.ones_like if name == "attention_mask" else torch.zeros_like)(batch["input_ids"])
        feed[name] = value.to(torch.int64).cpu().numpy()
    return torch.from_numpy(session.run(["logits"], feed)[0])
