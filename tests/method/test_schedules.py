"""Per-step K and w, finishing unguided after the stop, and the recurrence of multistep solvers (issue 22)."""
from contextlib import nullcontext

import pytest
import torch
import yaml
from diffusers import DPMSolverMultistepScheduler

from conftest import batch_of, build_module, cli_config, targets_of, tiny_scheduler
from lit_featinv import DiffusionPrior, FeatureInversion, NoiseOptimization, TimmExtractor, UNetGradient
from lit_featinv.app.console import main
from lit_featinv.errors import ConfigError
from lit_featinv.method.loop import reverse_loop
from lit_featinv.method.sampling import alpha_bar, fork, generators, model_input
from lit_featinv.method.schedules import per_step


def test_a_schedule_is_a_number_a_list_or_pieces():
    assert per_step(4, 3, "k") == [4, 4, 4]
    assert per_step([1, 2, 3], 3, "k") == [1, 2, 3]
    assert per_step({0: 8, 2: 1, "4": 3}, 6, "k") == [8, 8, 1, 1, 3, 3]


@pytest.mark.parametrize("value, message", [
    ([1, 2], "model.recurrence: has 2 values for 4 steps"),
    ({0: 8, "late": 1}, "model.recurrence: 'late' is not a step index"),
    ({2: 8}, "model.recurrence: pieces start at step 2"),
    ({0: 8, 9: 1}, "model.recurrence: piece from step 9 is outside steps 0..3"),
    ({0: 0}, "model.recurrence: 0 is not a count"),
])
def test_a_bad_recurrence_schedule_stops_in_one_line_naming_the_key(pixel_prior, timm_dir, value, message):
    with pytest.raises(ConfigError) as err:
        build_module(pixel_prior, timm_dir, recurrence=value)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("value, message", [
    ([0.5] * 3, "model.guidance.scale: has 3 values for 4 steps"),
    ({0: 0.5, "end": 1.0}, "model.guidance.scale: 'end' is not a step index"),
])
def test_a_bad_scale_schedule_stops_in_one_line_naming_the_key(pixel_prior, timm_dir, value, message):
    with pytest.raises(ConfigError) as err:
        build_module(pixel_prior, timm_dir, guidance=UNetGradient(scale=value))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_schedules_set_each_steps_iterations_and_weight(pixel_prior, timm_dir, image_dir):
    module = build_module(pixel_prior, timm_dir, recurrence={0: 3, 2: 1}, guidance=UNetGradient(scale={0: 0.5, 3: 0}))
    assert [module.iterations_at(i) for i in range(4)] == [3, 3, 1, 1]
    assert [module.guidance.weight(i) for i in range(4)] == [0.5, 0.5, 0.5, 0.0]
    module.on_predict_start()
    out = module.generate(targets_of(module, batch_of(image_dir, limit=1)), [1])
    assert out["nfe"].tolist() == [8] and out["unet_backward"].tolist() == [7]


def test_finish_unguided_needs_a_stop_cosine(pixel_prior, timm_dir):
    with pytest.raises(ConfigError, match="model.finish_unguided"):
        build_module(pixel_prior, timm_dir, finish_unguided=True)


def test_a_generation_that_stopped_finishes_as_the_unguided_sampler_continues_it(pixel_prior, timm_dir, image_dir):
    """Row 1 stops at step 2 (first iteration): it takes that step with that iteration's output, then every later
    step is one unguided call; its final sample equals the unguided sampler's continuation of its sample after step
    2, and row 0 is the same as in a run where nothing stops."""
    module = build_module(pixel_prior, timm_dir, num_inference_steps=6, recurrence=2)
    module.on_predict_start()
    target = targets_of(module, batch_of(image_dir, limit=2))

    def run(stop: bool):
        scheduler = fork(module.prior.scheduler)
        scheduler.set_timesteps(6)
        after, calls = {}, []

        def guided(sample, t, abar, rows, w):
            return module.guided_output(scheduler, sample, t, abar, target[rows], w)

        def on_iteration(it):
            calls.append((it.step, it.rows.tolist(), it.w))
            return (it.rows == 1) & (it.step == 2) & (it.k == 0) if stop else None

        def after_step(sample, rows, step):
            after[step] = sample.clone()
            return sample

        noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        final, rows = reverse_loop(guided, scheduler, noise, generators([1, 2]), lambda i: 2, lambda i: 0.5,
                                   on_iteration, after_step, finish_unguided=True)
        return final, rows, after, calls

    final, rows, after, calls = run(stop=True)
    assert rows.tolist() == [0, 1]
    assert [c for c in calls if 1 in c[1] and c[0] >= 3] == [(3, [1], 0.0), (4, [1], 0.0), (5, [1], 0.0)]
    scheduler = fork(module.prior.scheduler)
    scheduler.set_timesteps(6)
    sample = after[2][1:]
    with torch.no_grad():
        for t in scheduler.timesteps[3:]:
            sample = scheduler.step(module.prior.denoise(model_input(scheduler, sample, t), t), t, sample).prev_sample
    torch.testing.assert_close(final[1:], sample, atol=1e-5, rtol=0)
    torch.testing.assert_close(final[:1], run(stop=False)[0][:1], atol=1e-5, rtol=0)


def test_a_module_that_finishes_unguided_records_the_stop_and_the_cheaper_steps(pixel_prior, timm_dir, image_dir):
    module = build_module(pixel_prior, timm_dir, num_inference_steps=4, recurrence=3, stop_cosine=-0.99,
                          finish_unguided=True)
    module.on_predict_start()
    out = module.generate(targets_of(module, batch_of(image_dir, limit=1)), [1])
    assert out["stop_step"].tolist() == [0]  # every estimate has cosine > -0.99: it stops at its first iteration
    assert out["nfe"].tolist() == [4] and out["unet_backward"].tolist() == [1]  # 1 guided + 3 unguided steps
    assert torch.isfinite(out["image"]).all()


def test_the_recurrence_of_a_multistep_solver_returns_to_the_noise_level_of_the_step():
    """DPM-Solver++ (2M) with K = 3 and an exact denoiser of a known x0: at every iteration the sample is
    sqrt(abar) x0 + sqrt(1 - abar) n with n standard normal at the step's own abar."""
    scheduler = DPMSolverMultistepScheduler.from_config(tiny_scheduler().config)
    scheduler.set_timesteps(8)
    x0 = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    residual_std = []

    def guided(sample, t, abar, rows, w):
        eps = (sample - abar.sqrt() * x0[rows]) / (1 - abar).sqrt()
        residual_std.append(float(eps.std()))
        return eps, (x0[rows] + 1) / 2, x0[rows]

    noise = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    final, _ = reverse_loop(guided, scheduler, noise, generators([1, 2, 3, 4]), lambda i: 3, lambda i: 0.0)
    assert len(residual_std) == 8 * 3
    assert all(abs(s - 1) < 0.03 for s in residual_std), residual_std
    torch.testing.assert_close(final, x0, atol=1e-3, rtol=0)
    assert float(alpha_bar(scheduler, 8)) == pytest.approx(1.0, abs=1e-3)


def test_noise_optimisation_with_zero_steps_is_the_samplers_plain_output(pixel_prior, timm_dir, image_dir):
    plain = build_module(pixel_prior, timm_dir, num_inference_steps=4, recurrence=1, w=0.0)
    plain.on_predict_start()
    target = targets_of(plain, batch_of(image_dir, limit=2))
    extractor = TimmExtractor(f"local-dir:{timm_dir}")

    def optimised(steps):
        with pytest.warns(UserWarning, match="this only samples the prior") if steps == 0 else nullcontext():
            module = build(steps)
        module.on_predict_start()
        return module.generate(target, [1, 2])

    def build(steps):
        return FeatureInversion(DiffusionPrior(str(pixel_prior), scheduler="diffusers.DDIMScheduler"), extractor,
                                num_inference_steps=4, progress=False,
                                sampler=NoiseOptimization(optimization_steps=steps))

    zero, three = optimised(0), optimised(3)
    torch.testing.assert_close(zero["image"], plain.generate(target, [1, 2])["image"], atol=1e-5, rtol=0)
    assert zero["nfe"].tolist() == [4, 4] and zero["unet_backward"].tolist() == [0, 0]
    assert three["nfe"].tolist() == [16, 16] and three["unet_backward"].tolist() == [12, 12]
    loss = lambda images: plain.loss(plain.extractor(images), target)  # noqa: E731
    assert (loss(three["best_image"].float() / 255) <= loss(zero["best_image"].float() / 255) + 1e-4).all()
    assert not torch.equal(three["image"], zero["image"])


def test_noise_optimisation_refuses_a_negative_step_count(pixel_prior, timm_dir):
    with pytest.raises(ConfigError, match="model.sampler.optimization_steps"):
        NoiseOptimization(optimization_steps=-1)


def test_a_schedule_from_the_command_line_with_an_unknown_key_is_one_line(tmp_path, pixel_prior, timm_dir, image_dir):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, image_dir)))
    base = ["predict", "--trainer.default_root_dir", str(tmp_path / "out"), "--config", str(tmp_path / "run.yaml")]
    with pytest.raises(SystemExit) as stop:
        main(base + ["--model.init_args.recurrence", "{0: 2, late: 1}"])
    assert str(stop.value) == ("lit-featinv: error: model.recurrence: 'late' is not a step index (pieces are "
                               "{from step: value})")
    with pytest.raises(SystemExit) as stop:
        main(base + ["--model.init_args.guidance.init_args.scale", "[0.5, 0.5]"])
    assert str(stop.value) == "lit-featinv: error: model.guidance.scale: has 2 values for 3 steps (model.num_inference_steps)"
