"""The identity of a run: what its results depend on, recorded in its configuration and compared on resume.

Data: the task, the resolved data directory and a SHA-256 of the tokenized splits it uses (ids, token types,
labels: cheap, and it covers the tokenizer and max_length too). Model: its configuration (sizes, family,
labels) and a SHA-256 of its weights, not the path it was loaded from. Code: the fastticket version and, in a
git checkout, the commit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess

TOKENIZED_COLUMNS = ("input_ids", "token_type_ids", "labels")


def fingerprint_dataset(data, columns=TOKENIZED_COLUMNS) -> str:
    """SHA-256 (hex) of the named columns a dataset has, row order included."""
    h = hashlib.sha256()
    names = [c for c in columns if c in data.column_names]
    for name in names:
        h.update(f"{name}:{len(data)}:".encode())
        h.update(json.dumps(list(data[name]), separators=(",", ":")).encode())
    return h.hexdigest()


def fingerprint_state(state: dict) -> str:
    """SHA-256 (hex) of a state dict: every tensor's name, dtype, shape and bytes."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_identity(model) -> dict:
    """{"config": the model's configuration without the source path, "weights_sha256": ...}."""
    config = {k: v for k, v in model.config.to_dict().items() if k != "hf_config"}
    return {"config": config, "weights_sha256": fingerprint_state(model.state_dict())}


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """fastticket's version, plus the git commit when it runs from a checkout ("0.1.0+g1a2b3c4d5e6f")."""
    from .. import __version__

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(root, ".git")):
        return __version__
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit[:12]}" if commit else __version__


def config_differences(old, new, prefix: str = "") -> list[str]:
    """'key: old -> new' for every (nested, dotted) key whose value differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}{key}"
            if key not in old or key not in new:
                out.append(f"{name}: {_short(old.get(key, '(absent)'))} -> {_short(new.get(key, '(absent)'))}")
            else:
                out += config_differences(old[key], new[key], name + ".")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: {_short(old)} -> {_short(new)}"]
    return []


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
