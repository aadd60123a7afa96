"""Any diffusers scheduler steps the guided output, in variance-preserving or sigma (Euler-type) space."""
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from conftest import batch_of, build_module, targets_of, tiny_scheduler
from lit_featinv.method.sampling import alpha_bar, noise_space, renoise, sample_seed, split_prediction

SCHEDULERS = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler]


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS, ids=lambda c: c.__name__)
def test_guided_self_recurrent_sampling_runs_with_any_scheduler(pixel_prior, timm_dir, image_dir, scheduler_cls):
    module = build_module(pixel_prior, timm_dir, scheduler=f"diffusers.{scheduler_cls.__name__}", w=0.5,
                          recurrence=2, num_inference_steps=4)
    module.on_predict_start()
    batch = batch_of(image_dir, limit=1)
    out = module.generate(targets_of(module, batch), [sample_seed(0, "x", 0)])
    assert out["nfe"] == 8
    assert torch.isfinite(out["image"]).all() and torch.isfinite(out["best_image"]).all()
    assert out["image"].std() > 0.01  # not collapsed to a constant


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler],
                         ids=lambda c: c.__name__)
def test_clean_estimate_is_the_schedulers_own(pixel_prior, timm_dir, scheduler_cls):
    """abar (from sigmas where the scheduler has them) gives the x0 that the scheduler's step computes."""
    module = build_module(pixel_prior, timm_dir, scheduler=f"diffusers.{scheduler_cls.__name__}", w=0.0)
    scheduler = scheduler_cls.from_config(module.prior.scheduler.config, timestep_spacing="linspace")
    scheduler.set_timesteps(5)  # Euler: fractional timesteps
    target = torch.zeros(1, module.extractor(torch.zeros(1, 1, 16, 16)).shape[1])
    sample = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps[:3]):
        output, image, _ = module.guided_output(scheduler, sample, t, alpha_bar(scheduler, i), target, 0.0)
        step = scheduler.step(output, t, sample)
        torch.testing.assert_close(image * 2 - 1, step.pred_original_sample, atol=1e-4, rtol=1e-4)
        sample = step.prev_sample


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, EulerDiscreteScheduler], ids=lambda c: c.__name__)
def test_self_recurrence_returns_to_the_noise_level_of_the_step(pixel_prior, timm_dir, scheduler_cls, monkeypatch):
    """With an exact denoiser of data = 0, every iteration of a step sees the same noise level."""
    module = build_module(pixel_prior, timm_dir, scheduler=f"diffusers.{scheduler_cls.__name__}", w=0.0,
                          recurrence=3, num_inference_steps=4)
    abar = module.prior.scheduler.alphas_cumprod  # integer timesteps ("leading" spacing)
    monkeypatch.setattr(module.prior, "denoise", lambda z, t: z / (1 - abar[int(t)]).sqrt())  # x0 = 0
    seen, guided_output = [], module.guided_output
    monkeypatch.setattr(module, "guided_output", lambda scheduler, sample, *args: (
        seen.append(sample.std().item()), guided_output(scheduler, sample, *args))[1])
    module.generate(torch.zeros(1, module.extractor(torch.zeros(1, 1, 16, 16)).shape[1]), [sample_seed(0, "x", 0)])
    for step in range(3):  # the 3 iterations of each step but the last
        first, renoised = seen[3 * step], seen[3 * step + 1: 3 * step + 3]
        assert all(0.8 < std / first < 1.25 for std in renoised), (step, seen)


def test_euler_levels_come_from_sigmas():
    scheduler = EulerDiscreteScheduler.from_config(tiny_scheduler().config, timestep_spacing="linspace")
    scheduler.set_timesteps(7)
    assert noise_space(scheduler) == "sigma" and (scheduler.timesteps % 1 != 0).any()  # fractional timesteps
    for i in range(len(scheduler.timesteps) + 1):
        sigma = scheduler.sigmas[i]
        torch.testing.assert_close(alpha_bar(scheduler, i), 1 / (1 + sigma**2))
    ddim = DDIMScheduler.from_config(tiny_scheduler().config)
    ddim.set_timesteps(7)
    assert noise_space(ddim) == "vp" and alpha_bar(ddim, 1) == ddim.alphas_cumprod[ddim.timesteps[1]]


def test_renoise_in_sigma_space_has_the_forward_process_variance():
    gens = [torch.Generator().manual_seed(0)]
    x0 = torch.linspace(-1, 1, 256 * 256).view(1, 1, 256, 256)
    sigma_t, sigma_prev = 3.0, 1.0
    prev = x0 + sigma_prev * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    out = renoise(prev, torch.tensor(1 / (1 + sigma_t**2)), torch.tensor(1 / (1 + sigma_prev**2)), gens, "sigma")
    assert abs((out - x0).std().item() - sigma_t) < 0.02 and abs((out - x0).mean().item()) < 0.02


def test_split_prediction_in_sigma_space():
    """Euler's scaled input x / sqrt(sigma^2 + 1) is the variance-preserving sample at abar = 1 / (1 + sigma^2)."""
    x0, eps, sigma = torch.randn(4), torch.randn(4), torch.tensor(2.5)
    abar = 1 / (1 + sigma**2)
    _, x0_hat = split_prediction(eps, (x0 + sigma * eps) / (sigma**2 + 1).sqrt(), abar, "epsilon")
    torch.testing.assert_close(x0_hat, x0)
