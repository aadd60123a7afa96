"""Config files and presets: a preset is a YAML config shipped with the package, named by its path under the configs
folder without ``.yaml`` (``quickstart``, ``fmnist/pixel_resnet``, ``paper/clip_rn50``); a relative path inside a
config file is found relative to that file."""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from .errors import ConfigError

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
    raise ConfigError(key, f"{value!r} is neither a file nor a preset (cwd: {os.getcwd()}); presets: "
                           + ", ".join(names()) + " (lit-featinv presets)")


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


def config_args(args: list[str]) -> list[str]:
    """Command-line arguments with each ``--config FILE_OR_PRESET`` (``-c``, ``--config=``) replaced by the config's
    text with its paths resolved (:func:`load`)."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.partition("=")
        if flag in ("--config", "-c") and (eq or i + 1 < len(args)):
            value = value if eq else args[i + 1]
            text = ":" in value and not Path(value).is_file()  # a config given as YAML text (jsonargparse takes it)
            out += [flag, value if text else yaml.safe_dump(load(value), sort_keys=False)]
            i += 1 if eq else 2
        else:
            out.append(arg)
            i += 1
    return out


def main(args: list[str] | None = None) -> None:
    """``lit-featinv presets``: each preset's name and what it does."""
    width = max(map(len, names()))
    for name in names():
        print(f"{name:<{width}}  {summary(CONFIGS / f'{name}.yaml')}")
    print(f"\nrun one: lit-featinv predict --config NAME   (files: {CONFIGS})")
