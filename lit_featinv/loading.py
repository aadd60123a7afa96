"""Resolve model sources (hub id or local folder) and import classes named in configs."""
from __future__ import annotations

import importlib
import os

from .errors import ConfigError


def import_object(path: str, default_module: str | None = None):
    """Import ``pkg.module.Name`` (or a bare ``Name`` from ``default_module``)."""
    module_name, _, name = path.rpartition(".")
    module_name = module_name or default_module
    if not module_name:
        raise ValueError(f"{path!r} is not an import path like 'package.module.Class'")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {path!r}: {err}") from err


def instantiate(spec: dict, base: type):
    """A ``{class_path, init_args}`` spec as an instance of ``base`` or of a subclass, its arguments type-checked by
    jsonargparse (an ``argparse.ArgumentError`` when they do not fit)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "value", required=True)
    return parser.instantiate_classes(parser.parse_object({"value": spec})).value


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
