"""ft.export and ft.load_pruned: write a (possibly compact) TicketModel to a directory, and read it back.

format="compact": our own parameter names and the compact shapes (only the heads/FFNs the model holds),
    `model.safetensors` + `fastticket_config.json` (format tag, version, every EncoderConfig field including
    kept_heads / kept_ffn). Physically smaller; read back by ft.load_pruned.
format="hf": a Hugging Face checkpoint of the source family (config.json, model.safetensors with HF names,
    the sequence-classification head) that plain `transformers.AutoModelForSequenceClassification
    .from_pretrained` loads with the same logits: what a compact model lacks is written as zeros (a pruned
    head's Q/K/V (and DeBERTa's pos_q/pos_k) rows and W_O columns; a pruned FFN's weights and its output
    bias, so HF's layer output is LayerNorm(0 + x) post-norm, x + 0 pre-norm). The family names the
    weights and writes config.json (ModernBERT's q/k/v and up/gate fused again). Full size; read back by
    ft.load_model (or ft.load_pruned).
format="hf-compact": a self-contained Hugging Face checkpoint at the compact shapes (hf_compact.py):
    config.json (model_type "fastticket_encoder", kept heads and FFN widths per layer, auto_map),
    model.safetensors, modeling_fastticket.py; `AutoModelForSequenceClassification.from_pretrained(path,
    trust_remote_code=True)` loads it with transformers alone. Physically smaller; ft.load_pruned refuses it.
format="onnx": model.onnx (onnx_export.py; needs the `fastticket[onnx]` extra) and fastticket_onnx.json.
Every format copies the tokenizer files of `model.name_or_path` (a directory, or a hub name's snapshot in
the local Hugging Face cache). Each export is atomic per directory: it is written into a temporary
directory next to `path`, which then takes `path`'s place in one atomic exchange once it is complete (at
every instant `path` holds the old export or the new one); a failed export leaves an earlier one at `path`
as it was. The directory records in fastticket_run.json that an export wrote it (and which files), and an
export replaces only such a directory, never the user's files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import fields

import torch

from .blocks import HEAD_COLUMN_LINEARS, HEAD_ROW_LINEARS, NEURON_COLUMN_LINEARS, NEURON_ROW_LINEARS
from .config import MODEL_TYPES, EncoderConfig
from .convert import hf_tensors
from ..ops import check_backend_name
from ..rundir import replace_dir
from .encoder import TicketModel

FORMATS = ("compact", "hf", "hf-compact", "onnx")
COMPACT_FORMAT = "fastticket.compact"
COMPACT_VERSION = 1
CONFIG_FILE = "fastticket_config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model")



def export(model: TicketModel, path, format: str = "compact") -> str:
    """Writes `model` to the directory `path` (replacing an earlier export there); returns the path."""
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not supported; allowed: {FORMATS}")
    if not isinstance(model, TicketModel):
        raise ValueError(f"export needs a fastticket TicketModel; got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        # "" would be the working directory itself, which the atomic swap would then replace
        raise ValueError(f"export path {path!r}; allowed: a directory path (new, empty, or an earlier export)")
    check_shapes(model)
    if format == "onnx":
        from .onnx_export import require_onnx

        require_onnx()
    writers = {"compact": _write_compact, "hf": _write_hf, "hf-compact": _write_hf_compact, "onnx": _write_onnx}
    writer = writers[format]
    return _atomic_dir(path, lambda tmp: (writer(model, tmp), _copy_tokenizer(model, tmp)))


def check_shapes(model: TicketModel) -> None:
    """Refuses a model whose weights do not have the shapes its config (kept heads, FFN widths) describes (a
    ticket written into the config by hand, weights of another ticket): one line naming the first mismatch."""
    with torch.device("meta"):
        expected = TicketModel(model.config).state_dict()
    state = model.state_dict()
    for name in list(expected) + [n for n in state if n not in expected]:  # in the model's order
        want = tuple(expected[name].shape) if name in expected else None
        got = tuple(state[name].shape) if name in state else None
        if want != got:
            raise ValueError(f"the model's weight {name} has shape {got} but its ticket (kept_heads/kept_ffn/"
                             f"kept_neurons) needs {want}: the ticket does not match the model")


def load_pruned(path, *, backend: str = "auto") -> TicketModel:
    """A TicketModel (eval mode) from an ft.export directory: a compact export comes back compact, with the
    kept heads/FFNs it records; an "hf" export is read by ft.load_model."""
    path = os.fspath(path)
    check_backend_name(backend)  # here: inside the reader it would blame the export
    if not os.path.isdir(path):
        raise ValueError(f"export {path!r} is not a directory")
    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return _load_compact(path, backend)
    if os.path.isfile(os.path.join(path, "config.json")):
        from .hf_compact import is_hf_compact
        from .loading import load_model

        if is_hf_compact(path):
            raise ValueError(f"export {path!r} is an hf-compact export: load it with transformers "
                             "(AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True))")

        return load_model(path, backend=backend)
    raise ValueError(f"export {path!r} has neither {CONFIG_FILE} (compact export) nor config.json (hf export)")


def expanded_state_dict(model: TicketModel) -> dict[str, torch.Tensor]:
    """`model`'s state in the full layout (our names, every head, FFN and FFN neuron): what a compact model
    does not hold is zero, which computes the same as leaving it out (a pruned neuron's up/gate rows and down
    column). A full model's state comes back as copies."""
    cfg = model.config
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if not cfg.is_compact:
        return state
    with torch.device("meta"):
        full = TicketModel(cfg.full()).state_dict()
    like = next(iter(state.values()))
    d = cfg.head_dim
    out = {}
    for name, meta in full.items():
        if name in state and state[name].shape == meta.shape:
            out[name] = state[name]
            continue
        out[name] = torch.zeros(meta.shape, dtype=like.dtype, device=like.device)
        layer, module = _layer_and_module(name)
        parts = name.split(".")
        if name in state and layer is not None and parts[2] == "ffn" and parts[3] in NEURON_ROW_LINEARS + NEURON_COLUMN_LINEARS:
            neurons = torch.tensor(cfg.layer_neurons(layer), dtype=torch.long, device=like.device)
            if parts[3] in NEURON_ROW_LINEARS:
                out[name][neurons] = state[name]
            else:
                out[name][:, neurons] = state[name]
            continue
        held = cfg.layer_heads(layer) if layer is not None else []
        if name not in state or not held:
            continue  # a pruned FFN's weights, or a head weight of a layer that holds no head: zeros
        rows = torch.tensor([h * d + i for h in held for i in range(d)], dtype=torch.long, device=like.device)
        if module in HEAD_ROW_LINEARS:
            out[name][rows] = state[name]
        elif module in HEAD_COLUMN_LINEARS:
            out[name][:, rows] = state[name]
        else:
            raise ValueError(f"cannot expand {name} of shape {tuple(state[name].shape)} to {tuple(meta.shape)}")
    return out


def _layer_and_module(name: str) -> tuple[int | None, str | None]:
    """layers.<l>.attention.<module>.<param> -> (l, module); (l, None) for other layer weights; (None, None)."""
    parts = name.split(".")
    if parts[0] != "layers":
        return None, None
    return int(parts[1]), (parts[3] if parts[2] == "attention" and len(parts) == 5 else None)


def hf_config_dict(config: EncoderConfig) -> dict:
    """config.json for the source family: the source config (config.hf_config) with the architecture and
    every field our config holds (sizes, dropouts, options, labels) set by the family from `config`."""
    family = config.family_adapter
    c = {k: v for k, v in dict(config.hf_config).items() if not k.startswith("_")}
    # a config built by hand (no source) may carry the default hf_model_type of another family
    model_type = config.hf_model_type if MODEL_TYPES.get(config.hf_model_type) == config.family else family.model_types[0]
    c.update(family.hf_config(config))
    c.update(model_type=model_type, architectures=[family.architectures[model_type]])
    id2label = c.get("id2label") or {}
    if len(id2label) != config.num_labels:
        id2label = {i: f"LABEL_{i}" for i in range(config.num_labels)}
    id2label = {str(k): v for k, v in id2label.items()}
    c.update(id2label=id2label, label2id={v: int(k) for k, v in id2label.items()})
    c.pop("num_labels", None)
    if config.is_regression:
        c["problem_type"] = "regression"
    elif c.get("problem_type") == "regression":
        c["problem_type"] = None
    return c


# --------------------------------------------------------------------------------------------- writers


def _write_hf(model: TicketModel, directory: str) -> None:
    cfg = model.config
    tensors = hf_tensors(expanded_state_dict(model), cfg.full())
    hf_cfg = hf_config_dict(cfg)
    hf_cfg["dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    _write_json(os.path.join(directory, "config.json"), hf_cfg)
    _save_safetensors(tensors, os.path.join(directory, WEIGHTS_FILE), {"format": "pt"})


def _write_hf_compact(model: TicketModel, directory: str) -> None:
    from . import hf_compact

    tensors = hf_compact.compact_tensors(model)
    config = hf_compact.hf_compact_config(model.config, hf_config_dict(model.config))
    config["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    config["tokenizer_class"] = hf_compact.tokenizer_class(model)
    _write_json(os.path.join(directory, "config.json"), config)
    _save_safetensors(tensors, os.path.join(directory, WEIGHTS_FILE), {"format": "pt"})
    hf_compact.copy_template(directory)


def _write_onnx(model: TicketModel, directory: str) -> None:
    from .onnx_export import write_onnx

    write_onnx(model, directory, hf_config_dict(model.config))


def _write_compact(model: TicketModel, directory: str) -> None:
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": COMPACT_FORMAT, "version": COMPACT_VERSION, "weights": WEIGHTS_FILE,
            "config": model.config.to_dict()}
    _write_json(os.path.join(directory, CONFIG_FILE), meta)
    _save_safetensors(tensors, os.path.join(directory, WEIGHTS_FILE), {"format": "pt", "fastticket": COMPACT_FORMAT})


def _save_safetensors(tensors: dict, file: str, metadata: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.cpu() for k, v in tensors.items()}, file, metadata=metadata)


def _write_json(file: str, obj) -> None:
    with open(file, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)


def tokenizer_dir(model: TicketModel) -> str | None:
    """The directory holding the tokenizer of `model`'s source: name_or_path itself, or, for a hub name
    (a search of --model bert-base-uncased), its snapshot in the local Hugging Face cache (never fetched)."""
    src = model.name_or_path
    if not src:
        return None
    if os.path.isdir(os.path.expanduser(src)):
        return os.path.expanduser(src)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(src, local_files_only=True, allow_patterns=list(TOKENIZER_FILES))
    except Exception:  # not a hub name, not cached, huggingface_hub missing: no tokenizer to copy
        return None


def _copy_tokenizer(model: TicketModel, directory: str) -> None:
    src = tokenizer_dir(model)
    if src is None:
        return
    for name in TOKENIZER_FILES:
        file = os.path.join(src, name)
        if os.path.isfile(file):
            shutil.copyfile(file, os.path.join(directory, name))


# --------------------------------------------------------------------------------------------- reader


def _load_compact(path: str, backend: str) -> TicketModel:
    try:
        with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or meta.get("format") != COMPACT_FORMAT:
            raise ValueError(f"format is {meta.get('format') if isinstance(meta, dict) else None!r}; expected {COMPACT_FORMAT!r}")
        version = meta.get("version")
        if not isinstance(version, int) or not 1 <= version <= COMPACT_VERSION:
            raise ValueError(f"version {version!r} is not supported; allowed: 1..{COMPACT_VERSION}")
        raw = meta.get("config")
        known = {f.name for f in fields(EncoderConfig)}
        if not isinstance(raw, dict) or not {"family", "num_layers", "num_heads"} <= raw.keys():
            raise ValueError("'config' is missing or incomplete")
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"'config' has unknown fields {unknown}")
        config = EncoderConfig(**raw)
        from safetensors.torch import load_file

        state = load_file(os.path.join(path, meta.get("weights", WEIGHTS_FILE)))
        with torch.device("meta"):
            model = TicketModel(config, backend=backend)
        model.load_state_dict(state, strict=True, assign=True)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise ValueError(f"compact export {path!r} is not valid: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # safetensors' SafetensorError (a corrupt weights file), ...
        if type(exc).__name__ != "SafetensorError":
            raise
        raise ValueError(f"compact export {path!r} has a corrupt weights file: {exc}") from None
    model.name_or_path = path
    return model.eval()


# --------------------------------------------------------------------------------------------- atomic directory


def _atomic_dir(path, write) -> str:
    """Runs write(tmp) on a fresh directory next to `path`, then swaps it in atomically (rundir.replace_dir).
    `path` must be new, empty, or an earlier export holding only what that export wrote: anything else (a
    run directory, an HF checkpoint, a project folder) is refused before anything is written."""
    return replace_dir(path, write, command="export")
