"""Config files and presets, and the classes they name: a preset is a YAML config shipped with the package, named by
its path under the configs folder without ``.yaml`` (``quickstart``, ``fmnist/pixel_resnet``, ``paper/clip_rn50``); a
relative path inside a config file is found relative to that file; a ``{class_path, init_args}`` spec becomes an
instance (:func:`instantiate`, :func:`build`)."""
from __future__ import annotations

import difflib
import importlib
import os
import re
from pathlib import Path

import yaml

from .errors import ConfigError, RenamedKey

HERE = Path(__file__).resolve().parent
# installed: configs/ inside the package (the wheel maps configs/ and assets/ into it); in the repository: ../configs
CONFIGS = next((p for p in (HERE / "configs", HERE.parent / "configs") if p.is_dir()), HERE / "configs")
ASSETS = CONFIGS.parent / "assets"  # what the presets read: the zoo, Fashion-MNIST test images, one-hot targets
# outputs (trainer.default_root_dir, writer.output_dir) stay relative to the current folder; the rest is read
# relative to the config file
OUTPUT_SECTIONS = ("trainer", "writer")
PATH = re.compile(r"^(?P<prefix>local-dir:)?(?P<path>[^\s\[\]]+?)(?P<row>\[\d+\])?$")


def names() -> list[str]:
    """The shipped presets, sorted."""
    return sorted(p.relative_to(CONFIGS).with_suffix("").as_posix() for p in CONFIGS.rglob("*.yaml"))


def summary(path: Path) -> str:
    """A config's first comment line: what it does."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def find(value: str, key: str = "--config") -> Path:
    """A config file, or the file of a preset name; an unknown name lists the known ones."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    name = value.removesuffix(".yaml")
    if (CONFIGS / f"{name}.yaml").is_file():
        return CONFIGS / f"{name}.yaml"
    raise ConfigError(key, f"{value!r} is neither a file nor a preset (cwd: {os.getcwd()}){nearest(name)}; presets: "
                           + ", ".join(names()) + " (lit-featinv presets)")


def nearest(name: str) -> str:
    """``; did you mean 'A' or 'B'?`` for the presets closest to a mistyped ``name`` (whole or its last part:
    ``pixel_resnt`` -> ``fmnist/pixel_resnet``); else nothing."""
    known = names()
    leaves = {n.rpartition("/")[2]: n for n in known}
    close = [leaves[n] for n in difflib.get_close_matches(name.rpartition("/")[2], list(leaves), n=3, cutoff=0.75)]
    close += difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    close = list(dict.fromkeys(close))[:3]
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def resolve(value, folder: Path):
    """A config's values with relative paths that exist relative to ``folder`` made absolute (``local-dir:`` and a
    ``[ROW]`` suffix kept); other values as they are (a path found nowhere stays relative to the current folder)."""
    if isinstance(value, dict):
        return {k: resolve(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, folder) for v in value]
    if not isinstance(value, str) or not (match := PATH.match(value)):
        return value
    path = Path(match["path"]).expanduser()
    if path.is_absolute() or not (folder / path).exists():
        return value
    return f"{match['prefix'] or ''}{(folder / path).resolve()}{match['row'] or ''}"


def load(value: str, key: str = "--config") -> dict:
    """A config file or preset as a dict, with its input paths (all but ``trainer`` and ``writer``: outputs) resolved
    relative to the file."""
    path = find(value, key)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(key, f"{path} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(config, dict):
        raise ConfigError(key, f"{path} holds a {type(config).__name__}, not a mapping of config keys")
    return {k: v if k in OUTPUT_SECTIONS else resolve(v, path.parent) for k, v in config.items()}


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


# model keys by their old names: a config (or a keyword) that uses one stops with one line naming the new one
RENAMED = {"backbone": "prior"}


def check_renamed_keywords(kwargs: dict, call: str) -> None:
    """Refuse a keyword by its old name (:data:`RENAMED`): ``OLD was renamed NEW: CALL(NEW=...)``."""
    for old, new in RENAMED.items():
        if old in kwargs:
            raise RenamedKey(old, new, f"{call}({new}=...)")


def check_renamed(model_args, where: str) -> None:
    """Refuse a key of the model's ``init_args`` that was renamed (:data:`RENAMED`), saying ``where`` it is."""
    for old, new in RENAMED.items():
        if isinstance(model_args, dict) and old in model_args:
            raise RenamedKey(f"model.{old}", f"model.{new}", f"write {new}: for {old}: under model.init_args ({where})")


def build(config: str | os.PathLike | dict, overrides: dict, base: type):
    """The ``model`` section of a config (a preset name, a YAML file or a dict) as an instance of ``base`` (a
    subclass of its ``class_path``: the subclass) or of its ``class_path``; ``overrides`` replace keys of its
    ``init_args``."""
    whole = load(str(config), "config") if isinstance(config, (str, os.PathLike)) else dict(config)
    section = whole.get("model", whole)  # a whole config or only its model section
    if not isinstance(section, dict) or "class_path" not in section:
        raise ConfigError("config", "needs a model section with class_path and init_args (as the presets have)")
    check_renamed(section.get("init_args"), "config" if isinstance(config, dict) else str(config))
    check_renamed_keywords(overrides, f"{base.__name__}.from_config")
    section = {**section, "init_args": {**(section.get("init_args") or {}), **overrides}}
    named = import_object(section["class_path"], "lit_featinv")
    if isinstance(named, type) and issubclass(base, named):  # a subclass built from its base's config
        section["class_path"] = f"{base.__module__}.{base.__qualname__}"
    return instantiate(section, base)
