"""The method, on tensors: the guided reverse loop, guidance, scheduler-agnostic sampling maths, objectives, the
measurement of images as saved, target features and constructions, and what the loop records per sample. No files,
no Lightning."""
from ..lazy import exports

__all__, __getattr__, __dir__ = exports(__name__, {
    "loop": ["reverse_loop", "Iteration"],
    "guidance": ["Guidance", "UNetGradient", "CleanEstimateGradient", "TwistedGradient"],
    "sampling": ["alpha_bar", "fork", "split_prediction", "join_prediction", "renoise", "sample_seed", "generators",
                 "check_timesteps"],
    "losses": ["FeatureLoss", "SquaredL2", "CosineDistance", "Activation", "Projection", "Diverse"],
    "measure": ["to_uint8", "match_metrics", "measure_saved", "score", "metrics", "track_best"],
    "records": ["BestImage", "Trajectory"],
    "particles": ["ParticleSampler", "LinearParticleSampler", "ParticleState", "systematic", "ess", "collapsed",
                  "corrected_step"],
    "noise_optimization": ["NoiseOptimization"],
    "targets": ["target_features"],
    "trust": ["PriorScore", "check_generations"],
    "constructions": ["Construction", "Interpolation", "Arithmetic", "FolderMean", "Direction"],
})
