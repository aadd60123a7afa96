"""``lit-featinv presets`` (each preset's name and what it does) and ``--config NAME`` on the command line."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..config import CONFIGS, RENAMED, check_renamed, load, names, summary
from ..errors import RenamedKey


def config_args(args: list[str]) -> list[str]:
    """Command-line arguments with each ``--config FILE_OR_PRESET`` (``-c``, ``--config=``) replaced by the config's
    text with its paths resolved (:func:`load`). A renamed model key (``RENAMED``), in a config or as a flag, stops
    here."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.partition("=")
        for old, new in RENAMED.items():
            if flag.startswith((f"--model.{old}", f"--model.init_args.{old}")):
                raise RenamedKey(f"model.{old}", f"model.{new}", f"write {flag.replace(old, new, 1)}")
        if flag in ("--config", "-c") and (eq or i + 1 < len(args)):
            value = value if eq else args[i + 1]
            text = ":" in value and not Path(value).is_file()  # a config given as YAML text (jsonargparse takes it)
            config = yaml.safe_load(value) if text else load(value)
            check_renamed(((config or {}).get("model") or {}).get("init_args") if isinstance(config, dict) else None,
                          f"--config {value}" if not text else "--config")
            out += [flag, value if text else yaml.safe_dump(config, sort_keys=False)]
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
