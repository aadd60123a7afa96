"""lit_featinv: a training-free feature decoder for vision networks (guided diffusion).

The classes below are imported when first used (``lit_featinv.FeatureInversion``, ``from lit_featinv import ...``,
a config's ``class_path``), so the ``lit-featinv`` command starts without torch's import time."""
from importlib import import_module

_WHERE = {
    "backbones": ["DiffusionPrior", "LatentDiffusionPrior", "StableDiffusionPrior"],
    "data": ["TargetData"],
    "extractors": ["FeatureExtractor", "TimmExtractor", "ModuleExtractor", "OpenClipExtractor", "TorchvisionExtractor"],
    "guidance": ["Guidance", "UNetGradient", "CleanEstimateGradient"],
    "losses": ["FeatureLoss", "SquaredL2", "CosineDistance", "Activation", "Projection", "Diverse"],
    "module": ["FeatureInversion"],
    "preprocess": ["Preprocess"],
    "targets": ["Construction", "Interpolation", "Arithmetic", "FolderMean", "Direction"],
    "writer": ["InversionWriter"],
}
MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = list(MODULE_OF)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
