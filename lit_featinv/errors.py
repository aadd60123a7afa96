"""The one error type for a bad config value or input: the CLI prints it as one line, ``KEY: what is wrong``."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config value (or an input it names) that cannot work; ``key`` is its config key (``model.extractor.layer``)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
