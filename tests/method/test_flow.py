"""Flow matching in the same loop: the flow's own re-noising, diffusers' flow schedulers as SD3 and FLUX ship them,
and the zoo's pixel DDPM seen exactly as a flow-matching model (the flow code path on real learned weights)."""
import copy

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from conftest import ZOO, build_module, cli_config, write_images
from lit_featinv import DiffusionPrior, FeatureInversion, FlowMatchingView, TimmExtractor, UNetGradient
from lit_featinv.errors import ConfigError
from lit_featinv.method.sampling import alpha_bar, check_timesteps, noise_space, prediction_type, renoise
from lit_featinv.models.priors import FLOW, flow_sigma, vp_alpha_bar

# FlowMatchEulerDiscreteScheduler's configs as shipped (scheduler/scheduler_config.json): Stable Diffusion 3 / 3.5 and
# FLUX.1-dev (dynamic shifting)
SD3 = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
        "base_image_seq_len": 256, "max_image_seq_len": 4096}


def test_flow_renoising_has_the_marginal_of_the_forward_process():
    """From sigma_s back to sigma_t > sigma_s: r x_s + sqrt(sigma_t^2 - (r sigma_s)^2) noise, r = (1 - sigma_t) /
    (1 - sigma_s), has x_t's marginal (1 - sigma_t) x0 + sigma_t eps: its mean and its spread around it."""
    x0 = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma_s, sigma_t = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    gens = [torch.Generator().manual_seed(n) for n in range(4000)]
    eps = torch.randn(4000, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x_s = ((1 - sigma_s) * x0 + sigma_s * eps).float()
    x_t = renoise(x_s, vp_alpha_bar(sigma_t).float(), vp_alpha_bar(sigma_s).float(), gens, "flow")
    torch.testing.assert_close(x_t.mean(0), ((1 - sigma_t) * x0[0]).float(), atol=0.06, rtol=0)
    assert abs(x_t.std(0).mean().item() - sigma_t.item()) < 0.01
    torch.testing.assert_close(flow_sigma(vp_alpha_bar(sigma_t)), sigma_t)


@pytest.mark.parametrize("config, schedule", [(SD3, {}), (FLUX, {"mu": 1.15})])
def test_flow_schedulers_as_shipped_run_in_the_loop_maths(config, schedule):
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    assert prediction_type(scheduler) == FLOW and noise_space(scheduler) == "flow"
    check_timesteps(copy.deepcopy(scheduler), 28, schedule=schedule)  # from 1000 down: allowed for flow matching
    scheduler.set_timesteps(28, **schedule)
    assert alpha_bar(scheduler, 0) == 0 and alpha_bar(scheduler, 28) == 1  # pure noise, then the clean sample
    levels = torch.stack([alpha_bar(scheduler, i) for i in range(29)])
    assert (levels[1:] > levels[:-1]).all()
    if config is FLUX:
        with pytest.raises(ConfigError, match="cannot make 28 steps"):  # FLUX needs its mu
            check_timesteps(copy.deepcopy(scheduler), 28)


def unguided(prior, noise, steps: int, scheduler) -> torch.Tensor:
    """The prior's own sampler without guidance: ``scheduler.step`` of its predictions."""
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(steps, **prior.schedule_kwargs(steps))
    x = noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(prior.denoise(x, t), t, x).prev_sample
    return x


def test_unguided_euler_on_the_zoo_flow_view_is_ddim_on_the_model():
    """The zoo's pixel DDPM seen as a flow (x_flow = x / (sqrt(abar) + sqrt(1 - abar))): Euler over the flow
    sigmas of DDIM's own timesteps gives DDIM's (eta 0) images on the original model, within 1e-4."""
    epsilon, view = DiffusionPrior(str(ZOO / "fmnist-ddpm")), FlowMatchingView(str(ZOO / "fmnist-ddpm"))
    noise = torch.randn(2, *epsilon.sample_shape, generator=torch.Generator().manual_seed(0))
    ddim = unguided(epsilon, noise, 10, epsilon.scheduler)
    abar = vp_alpha_bar(torch.tensor(view.schedule_kwargs(10)["sigmas"][0], dtype=torch.float64))
    flow = unguided(view, noise / float(abar.sqrt() + (1 - abar).sqrt()), 10, view.scheduler)  # the same start
    assert isinstance(epsilon.scheduler, DDIMScheduler) and ddim.abs().max() > 0.5
    torch.testing.assert_close(flow, ddim, atol=1e-4, rtol=0)


def test_the_module_runs_the_flow_view_as_ddim_when_unguided():
    """Through FeatureInversion (w = 0): the flow path's prediction type, model input, schedule and noise start give
    DDIM's images on the original model started from the same point (x_vp = x_flow (sqrt(abar) + sqrt(1 - abar)))."""
    extractor = TimmExtractor(f"local-dir:{ZOO / 'fmnist-resnet10t'}")
    view = FlowMatchingView(str(ZOO / "fmnist-ddpm"))
    module = FeatureInversion(view, extractor, guidance=UNetGradient(scale=0.0), num_inference_steps=8, recurrence=1,
                              progress=False)
    module.on_predict_start()
    out = module.generate(torch.zeros(1, module.feature_dim), [7])
    noise = torch.randn(1, *view.sample_shape, generator=torch.Generator().manual_seed(7))
    abar = vp_alpha_bar(torch.tensor(view.schedule_kwargs(8)["sigmas"][0], dtype=torch.float64))
    start = noise * float(abar.sqrt() + (1 - abar).sqrt())
    epsilon = DiffusionPrior(str(ZOO / "fmnist-ddpm"))
    ddim = (unguided(epsilon, start, 8, epsilon.scheduler) + 1) / 2
    torch.testing.assert_close(out["image"], ddim, atol=1e-4, rtol=0)


def test_a_flow_model_with_a_scheduler_for_another_prediction_is_one_line(pixel_prior, timm_dir):
    class Velocity(DiffusionPrior):
        prediction = FLOW
    with pytest.raises(ConfigError, match=r"^model.prior.scheduler: DDIMScheduler steps epsilon outputs, but "
                                          r"Velocity's model predicts flow_prediction: take a scheduler for it"):
        FeatureInversion(Velocity(str(pixel_prior)), TimmExtractor(f"local-dir:{timm_dir}"), progress=False)


def test_a_flow_prior_by_class_path_runs_guided_with_recurrence_through_the_cli(tmp_path, pixel_prior, timm_dir):
    """A flow prior by class_path, guided with K = 2 (the flow's own re-noising), end to end: every generation
    written with finite metrics (that the guidance moves images toward the target: tests/test_zoo.py, on real
    weights)."""
    import json

    import yaml

    from lit_featinv.app.cli import main
    write_images(tmp_path / "targets", count=2)
    config = cli_config(pixel_prior, timm_dir, tmp_path / "targets", num_inference_steps=6)
    config["model"]["init_args"]["prior"]["class_path"] = "lit_featinv.FlowMatchingView"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "out")])
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["status"] == "ok" and r["nfe"] == 12 and -1 <= r["cosine"] <= 1 for r in rows)


def test_build_module_still_takes_epsilon_priors(pixel_prior, timm_dir):
    assert prediction_type(build_module(pixel_prior, timm_dir).prior.scheduler) == "epsilon"


def test_an_off_grid_timestep_reaches_the_unet_unrounded(pixel_prior):
    """A level between two of the model's timesteps: the UNet embeds the interpolated timestep (here 500.4), not
    its floor (UNet2DModel casts a Python number to an integer)."""
    view = FlowMatchingView(str(pixel_prior))
    abar = 0.6 * view.grid.alphas_cumprod[500].double() + 0.4 * view.grid.alphas_cumprod[501].double()
    t_model = view.model_timestep(abar)
    assert 500.3 < t_model < 500.5
    seen = []
    view.unet.time_proj.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        view.denoise(torch.zeros(1, *view.sample_shape), flow_sigma(abar) * view.scheduler.config.num_train_timesteps)
    assert seen[0].is_floating_point() and abs(float(seen[0][0]) - t_model) < 1e-3


def test_pure_noise_takes_one_unguided_forward_whatever_k(pixel_prior, timm_dir):
    """SD 3's and FLUX's schedules start at sigma = 1 (abar 0): that step is one unguided forward, not K (K - 1
    would re-noise back to pure noise); nfe = K (steps - 1) + 1, the backward passes K (steps - 1)."""
    class Velocity(DiffusionPrior):
        prediction = FLOW
    prior = Velocity(str(pixel_prior))
    prior.scheduler = FlowMatchEulerDiscreteScheduler(**SD3)
    module = FeatureInversion(prior, TimmExtractor(f"local-dir:{timm_dir}"), guidance=UNetGradient(scale=0.5),
                              num_inference_steps=3, recurrence=4, progress=False)
    module.on_predict_start()
    seen = []
    prior.unet.register_forward_pre_hook(lambda module, args: seen.append(float(args[1])))
    out = module.generate(torch.zeros(2, module.feature_dim), [0, 1])
    assert seen.count(1000.0) == 1 and len(seen) == 4 * 2 + 1
    assert out["nfe"].tolist() == [9, 9] and out["unet_backward"].tolist() == [8, 8]


def test_the_views_start_is_ddims_scaled_as_the_readme_says():
    """The view starts from N(0, 1) in flow space: DDIM's start scaled by sqrt(abar) + sqrt(1 - abar), 1.029 at
    t = 980 (50 steps), as docs/priors.md ("Flow matching") says."""
    view = FlowMatchingView(str(ZOO / "fmnist-ddpm"))
    abar = vp_alpha_bar(torch.tensor(view.schedule_kwargs(50)["sigmas"][0], dtype=torch.float64))
    assert round(float(abar.sqrt() + (1 - abar).sqrt()), 3) == 1.029
