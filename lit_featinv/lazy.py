"""Public names of a package imported on first use (as diffusers' top-level ``__init__``): ``import lit_featinv``
and ``lit-featinv --help`` stay free of torch, and a ``class_path`` names a class by its short public path."""
from __future__ import annotations

from importlib import import_module


def exports(package: str, where: dict[str, list[str]]):
    """For a package's ``__init__``: ``__all__, __getattr__, __dir__ = exports(__name__, {module: [names]})``, the
    modules relative to the package."""
    module_of = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module_of[name]}", package), name)
        setattr(import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(import_module(package)), *module_of})

    return list(module_of), __getattr__, __dir__
