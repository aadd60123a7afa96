"""lit_featinv: a training-free feature decoder for vision networks (guided diffusion).

The public names below are imported when first used (``lit_featinv.FeatureInversion``, ``from lit_featinv import
...``, a config's ``class_path``), so the ``lit-featinv`` command starts without torch's import time. Each
sub-package (``models``, ``method``, ``runs``, ``analysis``, ``app``) exports its own public names the same way;
docs/api.md, "Layout", says what each holds."""
from .lazy import exports

__version__ = "0.1.0"
__all__, __getattr__, __dir__ = exports(__name__, {
    "config": ["ASSETS", "CONFIGS"],
    "models.priors": ["DiffusionPrior", "LatentDiffusionPrior", "StableDiffusionPrior", "FlowMatchingView"],
    "models.sdxl": ["StableDiffusionXLPrior"],
    "models.sd3": ["StableDiffusion3Prior"],
    "models.flux": ["FluxPrior"],
    "models.mixture": ["GaussianMixturePrior"],
    "models.extractors": ["FeatureExtractor", "TimmExtractor", "ModuleExtractor", "OpenClipExtractor",
                          "TorchvisionExtractor", "LinearExtractor"],
    "models.sae": ["SAEExtractor"],
    "models.preprocess": ["Preprocess"],
    "method.guidance": ["Guidance", "UNetGradient", "CleanEstimateGradient", "TwistedGradient"],
    "method.losses": ["FeatureLoss", "SquaredL2", "CosineDistance", "Activation", "Projection", "Diverse"],
    "method.constructions": ["Construction", "Interpolation", "Arithmetic", "FolderMean", "Direction"],
    "method.trust": ["PriorScore"],
    "method.particles": ["ParticleSampler", "LinearParticleSampler"],
    "method.noise_optimization": ["NoiseOptimization"],
    "runs.data": ["TargetData"],
    "runs.writer": ["InversionWriter"],
    "runs.results": ["Inversion"],
    "module": ["FeatureInversion"],
})
