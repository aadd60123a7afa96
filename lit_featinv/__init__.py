"""lit_featinv: a training-free feature decoder for vision networks (guided diffusion)."""
from .backbones import DiffusionPrior, LatentDiffusionPrior, StableDiffusionPrior
from .data import TargetData
from .extractors import FeatureExtractor, ModuleExtractor, OpenClipExtractor, TimmExtractor, TorchvisionExtractor
from .guidance import CleanEstimateGradient, Guidance, UNetGradient
from .losses import Activation, CosineDistance, Diverse, FeatureLoss, Projection, SquaredL2
from .module import FeatureInversion
from .preprocess import Preprocess
from .targets import Arithmetic, Construction, Direction, FolderMean, Interpolation
from .writer import InversionWriter

__all__ = ["DiffusionPrior", "LatentDiffusionPrior", "StableDiffusionPrior", "FeatureExtractor", "TimmExtractor",
           "ModuleExtractor", "OpenClipExtractor", "TorchvisionExtractor",
           "Guidance", "UNetGradient", "CleanEstimateGradient", "FeatureLoss", "SquaredL2", "CosineDistance", "Activation", "Projection", "Diverse", "Preprocess", "FeatureInversion", "TargetData",
           "Construction", "Interpolation", "Arithmetic", "FolderMean", "Direction", "InversionWriter"]
__version__ = "0.1.0"
