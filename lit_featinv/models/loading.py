"""Model weights from a hub id or a local folder or file, with errors that name the config key."""
from __future__ import annotations

import os

import torch

from ..errors import ConfigError


def looks_local(source: str) -> bool:
    """A path rather than a hub id ('org/name'): absolute, relative with ./ or ../, ~, or not one slash."""
    source = str(source)
    return source.startswith((".", "/", "~")) or source.count("/") != 1 or os.path.exists(source)


def check_source(source: str, key: str) -> str:
    """Fail early, naming the config key, when a local model folder or file does not exist."""
    path = os.path.expanduser(str(source))
    if looks_local(source) and not os.path.exists(path):
        raise ConfigError(key, f"no such file or folder {source!r} (cwd: {os.getcwd()})")
    return path if os.path.exists(path) else str(source)


def offline_hint(key: str, local: str = "folder") -> str:
    """What to do when a hub source could not be fetched."""
    return (f" It is neither a local {local} nor in the Hugging Face cache, and the hub could not be reached"
            f" (or HF_HUB_OFFLINE=1). Download it where a network is available and point {key} at the local {local}.")


def load_pretrained(loader, source: str, key: str, **kwargs):
    """``loader.from_pretrained(source, **kwargs)`` with errors that name the config key and the source."""
    source = check_source(source, key)
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        hint = "" if os.path.exists(source) else offline_hint(key)
        where = f" ({kwargs['subfolder']}/)" if kwargs.get("subfolder") else ""
        raise ConfigError(key, f"cannot load {source!r}{where}:{hint} {err}") from err


def load_state_dict(path: str, key: str = "model.extractor.weights") -> dict:
    """A state dict from a safetensors file or a ``torch.save`` file (loaded with ``weights_only=True``)."""
    path = check_source(path, key)
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
