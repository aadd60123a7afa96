"""A small, fast quality check with real learned weights (the Fashion-MNIST zoo in assets/zoo)."""
import statistics

from conftest import FMNIST, ZOO, batch_of
from lit_featinv import DiffusionPrior, FeatureInversion, LatentDiffusionPrior, TimmExtractor, UNetGradient


def mean_cosine(prior, guidance_scale: float, recurrence: int, guidance=UNetGradient, **options) -> float:
    module = FeatureInversion(prior, TimmExtractor(f"local-dir:{ZOO / 'fmnist-resnet10t'}"), num_inference_steps=20,
                              guidance=guidance(scale=guidance_scale, **options), recurrence=recurrence, progress=False)
    module.on_predict_start()
    return statistics.mean(r["metrics"]["cosine"] for r in module.predict_step(batch_of(FMNIST, limit=4)))


def test_guided_pixel_ddpm_is_far_closer_than_unguided():
    prior = DiffusionPrior(str(ZOO / "fmnist-ddpm"))
    guided, unguided = mean_cosine(prior, 0.8, 2), mean_cosine(prior, 0.0, 1)
    assert guided > 0.85 and guided > unguided + 0.3, (guided, unguided)


def test_guided_flow_view_of_the_pixel_ddpm_is_far_closer_than_unguided():
    """The flow-matching path (velocity prediction, flow re-noising, FlowMatchEulerDiscreteScheduler) on real weights:
    the zoo's pixel DDPM seen as a flow model (lit_featinv.FlowMatchingView)."""
    from lit_featinv import FlowMatchingView
    prior = FlowMatchingView(str(ZOO / "fmnist-ddpm"))
    guided, unguided = mean_cosine(prior, 0.8, 2), mean_cosine(prior, 0.0, 1)
    assert guided > 0.85 and guided > unguided + 0.3, (guided, unguided)


def test_guided_latent_ddpm_is_far_closer_than_unguided():
    prior = LatentDiffusionPrior(str(ZOO / "fmnist-ldm"))
    guided, unguided = mean_cosine(prior, 0.8, 2), mean_cosine(prior, 0.0, 1)
    assert guided > 0.8 and guided > unguided + 0.3, (guided, unguided)


def test_guidance_through_the_zoo_tiny_decoder_is_far_closer_than_unguided():
    """The tiny decoder distilled from the zoo VAE (assets/zoo/train_tiny_decoder.py) carries a gradient that guides
    the VAE's images (the scored ones)."""
    from lit_featinv import CleanEstimateGradient
    prior = LatentDiffusionPrior(str(ZOO / "fmnist-ldm"))
    guided = mean_cosine(prior, 0.8, 2, CleanEstimateGradient, decoder=str(ZOO / "fmnist-ldm" / "tiny-decoder"))
    unguided = mean_cosine(prior, 0.0, 1)
    assert guided > 0.8 and guided > unguided + 0.3, (guided, unguided)


def test_vae_upcast_follows_the_config_unless_set():
    """The zoo VAE says force_upcast: under bf16 autocast it decodes in float32 unless vae_upcast: false, which
    decodes in bf16 to within a few 8-bit levels of the float32 image."""
    import torch
    images = {}
    for upcast in (None, False):
        prior = LatentDiffusionPrior(str(ZOO / "fmnist-ldm"), vae_upcast=upcast)
        dtypes = []
        prior.vae.decoder.conv_in.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
        z = torch.randn(4, *prior.sample_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            images[upcast] = prior.decode(z)
        assert dtypes == [torch.float32 if upcast is None else torch.bfloat16]
        assert images[upcast].dtype == torch.float32
    assert 0 < (images[False] - images[None]).abs().max() <= 0.05  # [-1, 1]; 0.05 = 6.4 levels of 255
