"""The frozen networks: diffusion priors (denoiser, scheduler, decoder), feature extractors with their own
preprocessing, and the loading of their weights. Nothing here knows the guidance or a run."""
from ..lazy import exports

__all__, __getattr__, __dir__ = exports(__name__, {
    "priors": ["DiffusionPrior", "LatentDiffusionPrior", "StableDiffusionPrior", "FlowMatchingView", "decode_latents",
               "encode_prompt", "load_scheduler"],
    "sdxl": ["StableDiffusionXLPrior"],
    "sd3": ["StableDiffusion3Prior"],
    "flux": ["FluxPrior"],
    "mixture": ["GaussianMixture", "GaussianMixturePrior", "LinearPosterior"],
    "conditioned": ["PromptConditionedPrior", "write_prompt_embeds"],
    "text": ["save_prompt_embeds", "load_prompt_embeds"],
    "extractors": ["FeatureExtractor", "TimmExtractor", "ModuleExtractor", "OpenClipExtractor", "TorchvisionExtractor",
                   "LinearExtractor", "load_matrix"],
    "sae": ["SAEExtractor", "read_sae"],
    "preprocess": ["Preprocess"],
    "loading": ["load_pretrained", "load_state_dict"],
})
