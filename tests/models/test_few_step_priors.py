"""Few-step priors (SDXL-Turbo, SD 3.5 Large Turbo, FLUX.1-schnell) with noise optimisation, on tiny pipeline folders
that carry those models' scheduler configs as published (tests/tiny_pipelines.py): their schedules, the optimisation
lowering the feature loss through the whole sampler (with the VAE or a tiny decoder in the gradient), its cost in
``nfe`` / ``unet_backward``, and the warnings of a bad setting."""
import pytest
import torch

from conftest import save_timm, save_tiny_decoder
from lit_featinv import FeatureInversion, NoiseOptimization, TimmExtractor
from lit_featinv.errors import ConfigError
from lit_featinv.models.flux import FluxPrior
from lit_featinv.models.sd3 import StableDiffusion3Prior
from lit_featinv.models.sdxl import StableDiffusionXLPrior
from tiny_pipelines import (FLUX_SCHNELL_SCHEDULER, SD35_TURBO_SCHEDULER, SDXL_TURBO_SCHEDULER, save_flux, save_sd3,
                            save_sdxl)

# name: (prior class, its scheduler as the preset names it, folder builder, steps the preset runs)
FEW_STEP = {
    "sdxl_turbo": (StableDiffusionXLPrior, "diffusers.EulerAncestralDiscreteScheduler",
                   lambda f: save_sdxl(f, SDXL_TURBO_SCHEDULER), 1),
    "sd35_turbo": (StableDiffusion3Prior, "diffusers.FlowMatchEulerDiscreteScheduler",
                   lambda f: save_sd3(f, SD35_TURBO_SCHEDULER), 4),
    "flux_schnell": (FluxPrior, "diffusers.FlowMatchEulerDiscreteScheduler",
                     lambda f: save_flux(f, False, FLUX_SCHNELL_SCHEDULER), 4),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("few_step")
    out = {name: build(root / name) for name, (_, _, build, _) in FEW_STEP.items()}
    out["timm"] = save_timm(root / "timm", "test_resnet", in_chans=3, size=16)
    return out


def module_of(name: str, folders: dict, steps: int | None = None, **sampler) -> FeatureInversion:
    prior_class, scheduler, _, default_steps = FEW_STEP[name]
    prior = prior_class(str(folders[name]), scheduler=scheduler)
    return FeatureInversion(prior, TimmExtractor(f"local-dir:{folders['timm']}"), progress=False, prior_score=None,
                            num_inference_steps=steps or default_steps,
                            sampler=NoiseOptimization(**({"lr": 0.1} | sampler)))


def target_of(module: FeatureInversion) -> torch.Tensor:
    """A feature the prior is unlikely to give from the seed's noise: of a fixed random image."""
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return module.extractor(image)


def test_the_published_schedules_are_the_few_step_ones(folders):
    """SDXL-Turbo's trailing spacing: its one step is t = 999 (the leading spacing of SDXL base would give 1); the
    flow models' 4 steps start at sigma 1 (schnell: no resolution shift, so sigmas 1, 0.75, 0.5, 0.25)."""
    turbo = module_of("sdxl_turbo", folders)
    assert type(turbo.prior.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert turbo.fresh_scheduler().timesteps.tolist() == [999]
    schnell = module_of("flux_schnell", folders).fresh_scheduler()
    torch.testing.assert_close(schnell.sigmas[:-1].float(), torch.tensor([1.0, 0.75, 0.5, 0.25]))
    sd35 = module_of("sd35_turbo", folders).fresh_scheduler()
    assert float(sd35.sigmas[0]) == 1.0 and len(sd35.timesteps) == 4


@pytest.mark.parametrize("name", FEW_STEP)
@pytest.mark.parametrize("tiny_decoder", [False, True])
def test_noise_optimisation_lowers_the_loss_through_the_whole_sampler(folders, name, tiny_decoder, tmp_path):
    """Against the unoptimised noise (the sampler's plain output from the same seeds), 6 Adam steps lower the
    feature loss of every generation; the cost is counted per pass through the sampler. With a tiny decoder in the
    gradient (random here, so no stand-in for the VAE that scores the images), the gradient goes through it and the
    best image is never worse."""
    decoder = None
    if tiny_decoder:
        channels = FEW_STEP[name][0](str(folders[name]), scheduler=FEW_STEP[name][1]).sample_shape[0]
        decoder = str(save_tiny_decoder(tmp_path / "taesd", latent_channels=channels, upsamplings=1, channels=3))
    optimised = module_of(name, folders, optimization_steps=6, decoder=decoder)
    with pytest.warns(UserWarning, match="only samples the prior"):
        plain = module_of(name, folders, optimization_steps=0)
    target = target_of(plain).expand(2, -1)
    steps = FEW_STEP[name][3]
    calls = []
    if tiny_decoder:
        optimised.sampler.decoder.decoder.register_forward_hook(lambda *args: calls.append(torch.is_grad_enabled()))
    out, base = optimised.generate(target, [1, 2]), plain.generate(target, [1, 2])
    loss = lambda images: optimised.loss(optimised.extractor(images.float() / 255), target)  # noqa: E731
    lowered = loss(out["best_image"]) < loss(base["best_image"])
    if tiny_decoder:
        assert calls == [True] * 6  # each Adam step's image, in the gradient; the scored ones by the VAE
        assert lowered.any() and (loss(out["best_image"]) <= loss(base["best_image"])).all()
    else:
        assert lowered.all()
    assert out["nfe"].tolist() == [steps * 7] * 2 and out["unet_backward"].tolist() == [steps * 6] * 2
    assert base["nfe"].tolist() == [steps] * 2 and base["unet_backward"].tolist() == [0, 0]


def test_a_stochastic_scheduler_draws_the_same_noise_in_every_pass(folders):
    """Euler ancestral (SDXL-Turbo's own) at 2 steps adds noise; each pass through the sampler draws the same, so the
    optimised function is deterministic in the initial noise."""
    module = module_of("sdxl_turbo", folders, steps=2, optimization_steps=1)
    scheduler = module.fresh_scheduler()
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    noise = module.initial_noise(gens, scheduler)
    with torch.no_grad():
        first, second = (module.sampler.sample_from(module, noise, gens) for _ in range(2))
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_more_steps_than_distilled_warns_naming_the_model_count(folders):
    with pytest.warns(UserWarning, match=r"num_inference_steps is 8, but the prior was distilled for 4 "
                                         r"\(model.sampler.distilled_steps"):
        module_of("flux_schnell", folders, steps=8, distilled_steps=4)


@pytest.mark.parametrize("kwargs, key", [({"optimization_steps": -1}, "model.sampler.optimization_steps"),
                                         ({"lr": 0.0}, "model.sampler.lr"),
                                         ({"norm_weight": -1.0}, "model.sampler.norm_weight"),
                                         ({"distilled_steps": 0}, "model.sampler.distilled_steps")])
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        NoiseOptimization(**kwargs)


def test_a_tiny_decoder_that_does_not_fit_or_a_stop_cosine_is_one_line(folders, tmp_path):
    decoder = str(save_tiny_decoder(tmp_path / "x4", latent_channels=4, upsamplings=2, channels=3))
    with pytest.raises(ConfigError, match="model.sampler.decoder: does not fit the prior"):
        module_of("sdxl_turbo", folders, decoder=decoder)
    prior = StableDiffusionXLPrior(str(folders["sdxl_turbo"]), scheduler=FEW_STEP["sdxl_turbo"][1])
    with pytest.raises(ConfigError, match="model.stop_cosine: noise optimisation"):
        FeatureInversion(prior, TimmExtractor(f"local-dir:{folders['timm']}"), num_inference_steps=1,
                         stop_cosine=0.9, sampler=NoiseOptimization())
