"""ft.load_model: our encoder from an HF checkpoint directory, a hub name, or an HF model object."""

from __future__ import annotations

import json
import os
import warnings

import torch

from .config import MODEL_TYPES, EncoderConfig
from .convert import find_base_prefix, normalize_hf_state_dict, split_fused
from .encoder import TicketModel
from .families import family_of_model_type

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def load_model(src, num_labels: int | None = None, *, seed: int = 0, backend: str = "auto") -> TicketModel:
    """A TicketModel holding a copy of every weight of `src` (the classification head too, when it has one).

    src: a checkpoint directory, a hub name (resolved through the local Hugging Face cache, or downloaded
    when online), or a transformers model object. num_labels: None keeps the checkpoint's; when the
    checkpoint has no head of that size, a fresh one is initialized from `seed`.
    """
    if isinstance(src, torch.nn.Module):
        if not hasattr(src, "config") or not hasattr(src.config, "model_type"):
            raise ValueError(f"model object of type {type(src).__name__} is not a transformers model (no .config.model_type)")
        hf_config, state, name = src.config.to_dict(), src.state_dict(), getattr(src.config, "_name_or_path", None) or None
    elif isinstance(src, (str, os.PathLike)):
        path = _resolve_dir(str(src))
        hf_config, state, name = _read_config(path), _read_weights(path), str(src)
    else:
        raise ValueError(f"src of type {type(src).__name__} is not supported; allowed: a checkpoint directory, a hub name, or a transformers model")

    config = EncoderConfig.from_hf(hf_config, num_labels)
    model = TicketModel(config, backend=backend)
    _copy_weights(model, normalize_hf_state_dict(state), seed)
    model.name_or_path = name
    return model.eval()


def _resolve_dir(src: str) -> str:
    src = os.path.expanduser(src)
    if os.path.isdir(src):
        return src
    if os.path.exists(src) or src.startswith((".", "/", "~")) or src.count("/") > 1:
        raise ValueError(f"checkpoint {src!r} is not a directory; allowed: an HF checkpoint directory or a hub name")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(src, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"])
    except Exception as exc:  # offline, unknown repo, gated, ...: one message
        raise ValueError(
            f"checkpoint {src!r} is neither a local directory nor a hub model that can be fetched ({type(exc).__name__}: {exc})"
        ) from None


def _read_config(path: str) -> dict:
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise ValueError(f"checkpoint {path!r} has no config.json")
    try:
        with open(file, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"checkpoint config {file} is corrupt or truncated ({exc})") from None
    if not isinstance(raw, dict) or raw.get("model_type") not in MODEL_TYPES:
        found = raw.get("model_type") if isinstance(raw, dict) else None
        raise ValueError(f"checkpoint {path!r} has model_type {found!r}; allowed: {sorted(MODEL_TYPES)}")
    require_transformers_family(raw["model_type"])
    from transformers import AutoConfig  # fills the family's defaults the file leaves out

    try:
        return AutoConfig.from_pretrained(path).to_dict()
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"checkpoint config {file} cannot be read by transformers: {exc}") from None


def require_transformers_family(model_type: str) -> None:
    """Refuses a family the installed transformers does not have (ModernBERT before 4.48): its config class
    supplies the defaults a config.json leaves out."""
    import transformers

    needed = family_of_model_type(model_type).transformers_class
    if needed and not transformers_has(needed):
        raise ValueError(f"model_type {model_type!r} needs transformers.{needed}, which the installed transformers "
                         f"{transformers.__version__} does not have; allowed here: a newer transformers for this family")


def transformers_has(name: str) -> bool:
    import transformers

    return hasattr(transformers, name)


def _read_weights(path: str) -> dict:
    for name in _WEIGHT_FILES:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue
        if name.endswith(".index.json"):
            try:
                with open(file, encoding="utf-8") as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"checkpoint index {file} is corrupt or truncated ({type(exc).__name__}: {exc})") from None
            state = {}
            for shard in shards:
                state.update(_read_file(os.path.join(path, shard)))
            return state
        return _read_file(file)
    raise ValueError(f"checkpoint {path!r} has no weights; looked for {_WEIGHT_FILES}")


def _read_file(file: str) -> dict:
    """The tensors of one weights file; a missing, truncated or corrupt file is one ValueError naming it."""
    if not os.path.isfile(file):
        raise ValueError(f"checkpoint weights {file} do not exist (named by the checkpoint's index)")
    try:
        if file.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(file)
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # SafetensorError, UnpicklingError, EOFError, RuntimeError ...: all mean a bad file
        if isinstance(exc, MemoryError):
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"checkpoint weights {file} are corrupt or truncated ({type(exc).__name__}: {detail})") from None


def _copy_weights(model: TicketModel, state: dict, seed: int) -> None:
    """Every encoder weight from `state` (HF names, fused tensors split); the head too when the checkpoint
    has one of the right size, else a fresh task layer from `seed` over the pre-trained pooler if it has one."""
    cfg, family = model.config, model.family
    prefix = find_base_prefix(state, family.anchor)
    ours = model.state_dict()
    names = family.encoder_weights(cfg)
    missing = [hf for _, hf in names if prefix + hf not in state]
    if missing:
        raise ValueError(f"checkpoint is missing encoder weights, e.g. {missing[:3]} ({len(missing)} in all)")
    with torch.no_grad():
        for targets, hf in names:
            parts = split_fused(state[prefix + hf], [ours[t].shape for t in targets], hf) if len(targets) > 1 else [state[prefix + hf]]
            for target, part in zip(targets, parts):
                _copy(ours[target], part, hf)
        pooler, classifier = family.pooler_weights(cfg, prefix), family.classifier_weights(cfg, prefix)
        found = lambda pairs: all(hf in state and state[hf].shape == ours[o[0]].shape for o, hf in pairs)  # noqa: E731
        has_pooler = found(pooler)
        cfg.pretrained_pooler = family.has_pretrained_pooler and has_pooler
        if has_pooler and found(classifier):
            for (target,), hf in pooler + classifier:
                _copy(ours[target], state[hf], hf)
            return
        model.reset_head(seed)
        kept = cfg.pretrained_pooler
        if kept:
            for (target,), hf in pooler:
                _copy(ours[target], state[hf], hf)
        warnings.warn(f"checkpoint has no {cfg.family} classifier with {cfg.num_labels} labels: "
                      f"initialized a new task head from seed {seed}" + (" (kept the pre-trained pooler)" if kept else ""),
                      stacklevel=3)


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise ValueError(f"checkpoint weight {name} has shape {tuple(src.shape)}; the config implies {tuple(dst.shape)}")
    dst.copy_(src.to(dst.dtype))
