"""lit_featinv: a training-free feature decoder for vision networks (guided diffusion)."""
from .backbones import DiffusionPrior, LatentDiffusionPrior
from .data import TargetData
from .extractors import FeatureExtractor, ModuleExtractor, TimmExtractor
from .losses import CosineDistance, FeatureLoss, SquaredL2
from .module import FeatureInversion
from .preprocess import Preprocess
from .writer import InversionWriter

__all__ = ["DiffusionPrior", "LatentDiffusionPrior", "FeatureExtractor", "TimmExtractor", "ModuleExtractor",
           "FeatureLoss", "SquaredL2", "CosineDistance", "Preprocess", "FeatureInversion", "TargetData",
           "InversionWriter"]
__version__ = "0.1.0"
