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


def role(key: str) -> str:
    """What loads the weights a config key names: ``model.prior.pretrained`` -> prior, ``model.sampler.decoder`` ->
    decoder, ``model.extractor.*`` -> extractor."""
    parts = key.split(".")
    return "decoder" if parts[-1] == "decoder" else parts[1] if parts[0] == "model" and len(parts) > 2 else "model"


def missing_weights(repo_id: str, key: str, why: str, where: str = "", local: str = "folder") -> str:
    """The one line for hub weights that could not be had: which, for what, why, and how to fetch them."""
    from huggingface_hub import constants

    return (f"cannot load {repo_id!r}{where} for the {role(key)}: {' '.join(why.split())}. Fetch it with `hf download "
            f"{repo_id}` where a network is available (a gated model needs its licence accepted on "
            f"{constants.ENDPOINT}/{repo_id} and `hf auth login` first), or point {key} at the local {local}")


def require_hub(repo_id: str, key: str, where: str = "", local: str = "folder") -> None:
    """Before a hub id loads: fail at once, in one line, when nothing of it is in the Hugging Face cache and the hub
    cannot be reached: ``HF_HUB_OFFLINE`` set, or a connection error on one request (huggingface_hub itself would
    retry for about 25 s). The request is made only when the weights are to be downloaded."""
    from huggingface_hub import constants, model_info
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import repo_folder_name

    folder = os.path.join(constants.HF_HUB_CACHE, repo_folder_name(repo_id=repo_id, repo_type="model"), "snapshots")
    if os.path.isdir(folder):
        return  # (some of) it is cached: the loader takes it from there or says which file is missing
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(key, missing_weights(repo_id, key, "it is not in the Hugging Face cache and HF_HUB_OFFLINE "
                                                             "is set", where, local))
    try:
        model_info(repo_id, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (HfHubHTTPError, ValueError):  # the hub answered (or the id is malformed): the loader says what is wrong
        return
    except Exception as err:  # no connection (requests' or httpx's error, by huggingface_hub's version)
        raise ConfigError(key, missing_weights(repo_id, key, f"it is not in the Hugging Face cache and the hub "
                                                             f"cannot be reached ({err})", where, local)) from err


def load_pretrained(loader, source: str, key: str, **kwargs):
    """``loader.from_pretrained(source, **kwargs)`` with errors that name the config key and the source; a hub id
    missing from the cache with no hub to fetch it from fails at once (:func:`require_hub`)."""
    source = check_source(source, key)
    where = f" ({kwargs['subfolder']}/)" if kwargs.get("subfolder") else ""
    if not os.path.exists(source):
        require_hub(source, key, where)
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        if not os.path.exists(source):
            raise ConfigError(key, missing_weights(source, key, str(err), where)) from err
        raise ConfigError(key, f"cannot load {source!r}{where}: {err}") from err


def load_state_dict(path: str, key: str = "model.extractor.weights") -> dict:
    """A state dict from a safetensors file or a ``torch.save`` file (loaded with ``weights_only=True``)."""
    path = check_source(path, key)
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
