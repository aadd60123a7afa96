"""The one error type for a bad config value or input, and the one-line forms of what the config parser and the
libraries it calls raise: every command prints a bad input as one line, ``KEY: what is wrong``."""
from __future__ import annotations

import argparse
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
        return f"{key}: cannot use class_path {path!r}: {reason.strip()}"
    return f"{key}: {lines[-1]}" if keys and lines else " ".join(text.split())


def config_error(err: BaseException) -> ConfigError | None:
    """The innermost :class:`ConfigError` in the chain of ``err`` (jsonargparse and Lightning wrap what they call)."""
    found = None
    while err is not None:
        found = err if isinstance(err, ConfigError) else found
        err = err.__cause__ or err.__context__
    return found
