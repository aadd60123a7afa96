"""The one error type for a bad config value or input, and the one-line forms of what the config parser and the
libraries it calls raise: every command prints a bad input as one line, ``KEY: what is wrong``."""
from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re


class ConfigError(ValueError):
    """A config value (or an input it names) that cannot work; ``key`` is its config key (``model.extractor.layer``)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class RenamedKey(ConfigError):
    """A key given by its old name: ``OLD was renamed NEW`` and how to write it now."""

    def __init__(self, old: str, new: str, hint: str = ""):
        ValueError.__init__(self, f"{old} was renamed {new}" + (f": {hint}" if hint else ""))
        self.key = old


def parse_error(err: argparse.ArgumentError) -> str:
    """jsonargparse's nested "does not validate" report -> one line: the key chain and the innermost reason."""
    text = str(err)
    keys = re.findall(r'Parser key "([^"]+)"', text)
    problem = re.findall(r"Problem with given class_path '([^']+)':\n\s*(.+)", text)
    noise = ("Given value", "Subtypes", "Errors", "- Expected", "Does not validate", "Parser key", "- Problem with")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(noise)]
    key = ".".join(keys) or "config"
    if problem and not problem[-1][1].strip().startswith("Parser key"):  # a class that cannot be imported or built
        path, reason = problem[-1]
        unknown = re.match(r"Option '([^']+)' is not accepted", reason.strip())
        hint = did_you_mean(unknown[1], parameters(path)) if unknown else ""
        return f"{key}: cannot use class_path {path!r}: {reason.strip()}{hint}"
    if keys and lines:
        return f"{key}: {lines[-1]}"
    inner = text[text.rfind("Subtypes: ["):]  # the innermost union: its types and the value none of them takes
    union = re.match(r"Subtypes: \[(.*)\]\n(?:.*\n)*?\s*Given value: (.*)", inner)
    if keys and union:
        types = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", union[1])
        return f"{key}: {union[2].strip()!r} is none of {types}"
    return " ".join(text.split())


def did_you_mean(name: str, known) -> str:
    """``; did you mean 'KEY'?`` where one known key is close to a mistyped ``name`` (its last part compared with
    those of the keys under the same prefix: ``--trainer.devicez`` -> ``--trainer.devices``); else nothing."""
    prefix, _, leaf = name.rpartition(".")
    leaves = {key.rpartition(".")[2]: key for key in known if key.rpartition(".")[0] == prefix}
    close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
    return f"; did you mean {leaves[close[0]]!r}?" if close else ""


def parameters(class_path: str) -> list[str]:
    """The parameter names of a class named by its import path (none when it cannot be imported)."""
    module, _, name = class_path.rpartition(".")
    try:
        return list(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        return []


def config_error(err: BaseException) -> ConfigError | None:
    """The innermost :class:`ConfigError` in the chain of ``err`` (jsonargparse and Lightning wrap what they call)."""
    found = None
    while err is not None:
        found = err if isinstance(err, ConfigError) else found
        err = err.__cause__ or err.__context__
    return found
