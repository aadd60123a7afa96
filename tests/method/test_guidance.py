"""Guidance components and per-sample stopping, on tiny models."""
import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

from conftest import batch_of, build_module, mid_step, save_tiny_decoder
from lit_featinv import CleanEstimateGradient, DiffusionPrior, FeatureInversion, UNetGradient
from lit_featinv.errors import ConfigError
from lit_featinv.method.measure import to_uint8
from lit_featinv.method.sampling import sample_seed

VARIANTS = [UNetGradient, CleanEstimateGradient]


@pytest.mark.parametrize("guidance", VARIANTS)
def test_every_variant_with_w_0_reproduces_the_unguided_pipeline(pixel_prior, timm_dir, guidance):
    module = build_module(pixel_prior, timm_dir, guidance_class=guidance, w=0.0, recurrence=1, num_inference_steps=10)
    seed = sample_seed(0, "x", 0)
    ours = module.generate(torch.zeros(1, module.extractor(torch.zeros(1, 1, 16, 16)).shape[1]), [seed])["image"]
    pipe = DDIMPipeline(unet=UNet2DModel.from_pretrained(pixel_prior, subfolder="unet"),
                        scheduler=DDIMScheduler.from_pretrained(pixel_prior, subfolder="scheduler"))
    theirs = pipe(batch_size=1, generator=torch.Generator().manual_seed(seed), num_inference_steps=10, eta=0.0,
                  output_type="np").images
    assert np.abs(ours.clamp(0, 1).permute(0, 2, 3, 1).numpy() - theirs).max() <= 1e-4


@pytest.mark.parametrize("guidance", VARIANTS)
def test_every_variant_runs_end_to_end_and_guides(pixel_prior, timm_dir, image_dir, guidance):
    losses = []
    for w in (0.0, 2.0):
        module = build_module(pixel_prior, timm_dir, guidance_class=guidance, w=w, num_inference_steps=8)
        module.on_predict_start()
        losses.append(np.mean([r["metrics"]["sq_l2"] for r in module.predict_step(batch_of(image_dir, limit=2))]))
    assert losses[1] < losses[0]


def test_clean_estimate_gradient_is_autograd_through_decoder_and_network(latent_prior, timm_dir):
    """On a latent prior (VAE decoder inside): the gradient w.r.t. the clean estimate, by hand."""
    from lit_featinv import LatentDiffusionPrior, TimmExtractor
    module = FeatureInversion(LatentDiffusionPrior(str(latent_prior)), TimmExtractor(f"local-dir:{timm_dir}"),
                              guidance=CleanEstimateGradient(scale=1.0), num_inference_steps=4, progress=False)
    module.on_predict_start()
    scheduler, t, abar = mid_step(module)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.randn(2, module.feature_dim, generator=torch.Generator().manual_seed(1))
    objective = lambda image: module.loss(module.extractor(image), target)  # noqa: E731
    out, image, grad = module.guidance.gradient(module.prior.denoise, module.to_image, objective, z, t, abar,
                                                "epsilon")
    with torch.no_grad():
        eps = module.prior.denoise(z, t)
    x0 = ((z - (1 - abar).sqrt() * eps) / abar.sqrt()).requires_grad_(True)
    expected = torch.autograd.grad(module.loss(module.extractor(module.to_image(x0)), target).sum(), x0)[0]
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(out, eps)
    assert grad.abs().max() > 0


class ConstantNoise(DiffusionPrior):
    """A denoiser whose prediction does not depend on its input (d eps / d z = 0)."""

    def denoise(self, sample, t):
        return torch.full_like(sample, 0.1) + 0 * sample.detach()


def test_without_the_unet_jacobian_both_gradients_guide_alike(pixel_prior, timm_dir):
    """Where d eps / d z_t = 0, d loss / d z_t = (d loss / d x0) / sqrt(abar): after the rescaling to the noise's norm
    the paper's gradient and the clean-estimate one give the same guided output (the latter's justification)."""
    outputs = []
    for guidance in VARIANTS:
        module = build_module(pixel_prior, timm_dir, guidance_class=guidance, w=1.0)
        module.prior.__class__ = ConstantNoise
        module.on_predict_start()
        scheduler, t, abar = mid_step(module)
        sample = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        target = torch.randn(2, module.feature_dim, generator=torch.Generator().manual_seed(1))
        outputs.append(module.guided_output(scheduler, sample, t, abar, target, 1.0)[0])
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-4)
    assert (outputs[0] - 0.1).abs().max() > 1e-3


def test_stopped_samples_leave_the_batch_with_the_estimate_that_reached_the_cosine(pixel_prior, timm_dir, tracked):
    """Per iteration (``tracked``): the rows in the batch, their cosine and the estimate offered (as saved)."""
    base = build_module(pixel_prior, timm_dir, w=2.0, num_inference_steps=6)
    kwargs = dict(guidance=UNetGradient(scale=2.0), num_inference_steps=6, recurrence=2, progress=False)
    free = FeatureInversion(base.prior, base.extractor, **kwargs)
    free.on_predict_start()
    target = free.extractor.measure(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    free.generate(target, [1, 2])
    seen = lambda: [(c["rows"], c["cosine"], c["candidates"][0]) for c in tracked]  # noqa: E731
    free_seen = seen()
    tracked.clear()
    best = [max(c[r] for _, c, _ in free_seen[:-1]) for r in range(2)]  # over the iterations (not the final image)
    a = int(np.argmax(best))
    assert best[a] > best[1 - a] + 1e-3, best
    threshold = (best[a] + best[1 - a]) / 2
    stops = FeatureInversion(base.prior, base.extractor, stop_cosine=threshold, **kwargs)
    stops.on_predict_start()
    out = stops.generate(target, [1, 2])
    stops_seen = seen()
    j = next(n for n, (_, c, _) in enumerate(free_seen) if c[a] >= threshold)  # the iteration sample a stops at
    assert [rows for rows, _, _ in stops_seen[: j + 1]] == [[0, 1]] * (j + 1)
    assert all(rows == [1 - a] for rows, _, _ in stops_seen[j + 1:])  # it left the batch
    assert torch.equal(to_uint8(out["image"][a:a + 1])[0], free_seen[j][2][a])  # its estimate then
    assert int(out["nfe"][a]) == j + 1 and int(out["nfe"][1 - a]) == 12 and int(out["stop_step"][a]) == j // 2
    assert int(out["stop_step"][1 - a]) == -1


def test_stopping_needs_a_one_step_scheduler_and_a_cosine(pixel_prior, timm_dir):
    with pytest.raises(ConfigError, match=r"^model.stop_cosine: PNDMScheduler keeps earlier outputs per sample"):
        build_module(pixel_prior, timm_dir, scheduler="diffusers.PNDMScheduler", stop_cosine=0.9)
    for bad in (1.5, -1.0):
        with pytest.raises(ConfigError, match=rf"^model.stop_cosine: {bad} is not a cosine in \(-1, 1\]"):
            build_module(pixel_prior, timm_dir, stop_cosine=bad)


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    return save_tiny_decoder(tmp_path_factory.mktemp("taesd"))


@pytest.mark.parametrize("guidance", VARIANTS)
def test_a_tiny_decoder_carries_the_gradient_and_the_vae_decodes_what_is_scored(latent_prior, timm_dir,
                                                                                tiny_decoder, guidance):
    from lit_featinv import LatentDiffusionPrior, TimmExtractor
    module = FeatureInversion(LatentDiffusionPrior(str(latent_prior)), TimmExtractor(f"local-dir:{timm_dir}"),
                              guidance=guidance(scale=1.0, decoder=str(tiny_decoder)), num_inference_steps=4,
                              progress=False)
    module.on_predict_start()
    scheduler, t, abar = mid_step(module)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.randn(2, module.feature_dim, generator=torch.Generator().manual_seed(1))
    output, image, _ = module.guided_output(scheduler, z, t, abar, target, 1.0)
    with torch.no_grad():
        eps = module.prior.denoise(z, t)
        x0 = (z - (1 - abar).sqrt() * eps) / abar.sqrt()
        torch.testing.assert_close(image, module.to_image(x0))  # scored: the prior's VAE
    # the gradient: through the tiny decoder (its own shaping), not the VAE
    plain = guidance(scale=1.0)
    tiny_image = lambda x: (module.guidance.tiny_decode(x) + 1) / 2  # noqa: E731
    objective = lambda image: module.loss(module.extractor(image), target)  # noqa: E731
    grad = plain.gradient(module.prior.denoise, tiny_image, objective, z, t, abar, "epsilon")[2]
    torch.testing.assert_close(output, eps + plain.shape(grad, eps))
    vae_grad = plain.gradient(module.prior.denoise, module.to_image, objective, z, t, abar, "epsilon")[2]
    assert (grad - vae_grad).abs().max() > 1e-4


def test_a_tiny_decoder_runs_end_to_end(latent_prior, timm_dir, tiny_decoder, image_dir):
    """(Whether it guides depends on how well it imitates the VAE: a random one does not; benchmarks measure it.)"""
    from lit_featinv import LatentDiffusionPrior, TimmExtractor
    module = FeatureInversion(LatentDiffusionPrior(str(latent_prior)), TimmExtractor(f"local-dir:{timm_dir}"),
                              guidance=CleanEstimateGradient(scale=2.0, decoder=str(tiny_decoder)),
                              num_inference_steps=3, recurrence=2, progress=False)
    module.on_predict_start()
    calls = []
    module.guidance.decoder.decoder.register_forward_hook(lambda *args: calls.append(1))
    records = module.predict_step(batch_of(image_dir, limit=2))
    assert [r["status"] for r in records] == ["ok", "ok"] and len(calls) == 6  # 3 steps x K = 2, batched
    assert all(r["image"].shape == (1, 16, 16) and r["metrics"]["unet_backward"] == 0 for r in records)


def test_a_tiny_decoder_that_does_not_fit_the_prior_is_named(latent_prior, pixel_prior, timm_dir, tmp_path,
                                                             tiny_decoder):
    from lit_featinv import LatentDiffusionPrior, TimmExtractor
    extractor = TimmExtractor(f"local-dir:{timm_dir}")
    for folder, what in ((save_tiny_decoder(tmp_path / "c3", latent_channels=3), "an error"),
                         (save_tiny_decoder(tmp_path / "x4", upsamplings=2), r"\(1, 1, 32, 32\)")):
        with pytest.raises(ConfigError, match=rf"^model.guidance.decoder: does not fit the prior: an 8x8 latent with "
                                              rf"4 channels decodes to {what}.*the prior's VAE gives \(1, 1, 16, 16\)"):
            FeatureInversion(LatentDiffusionPrior(str(latent_prior)), extractor,
                             guidance=UNetGradient(decoder=str(folder)))
    with pytest.raises(ConfigError, match=r"^model.guidance.decoder: DiffusionPrior is a pixel-space prior"):
        FeatureInversion(DiffusionPrior(str(pixel_prior)), extractor, guidance=UNetGradient(decoder=str(tiny_decoder)))
    with pytest.raises(ConfigError, match=r"^model.guidance.decoder: no such file or folder"):
        UNetGradient(decoder=str(tmp_path / "missing"))


def test_throughput_options_give_the_same_prediction(latent_prior):
    """channels_last (UNet and VAE) and torch.compile of the UNet (here its eager backend: no compiler needed) change
    speed, not results; attention is PyTorch's scaled-dot-product attention."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0
    from lit_featinv import LatentDiffusionPrior
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    plain = LatentDiffusionPrior(str(latent_prior))
    fast = LatentDiffusionPrior(str(latent_prior), channels_last=True, compile={"backend": "eager"})
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.unet._compiled_call_impl is not None and plain.unet._compiled_call_impl is None
    assert {type(m.processor) for m in plain.unet.modules() if isinstance(m, Attention)} == {AttnProcessor2_0}
    with torch.no_grad():
        torch.testing.assert_close(fast.denoise(z, t), plain.denoise(z, t), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fast.decode(z), plain.decode(z), atol=1e-5, rtol=1e-4)
