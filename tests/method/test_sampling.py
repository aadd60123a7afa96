import pytest
import torch

from lit_featinv.errors import ConfigError
from lit_featinv.method.sampling import check_timesteps, join_prediction, renoise, sample_seed, split_prediction


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample", "flow_prediction"])
def test_prediction_types_round_trip(kind):
    """Each output type splits into the eps and x0 it was made of and joins back; flow matching's sample is
    (1 - sigma) x0 + sigma eps at the sigma with abar's signal-to-noise ratio, its output the velocity eps - x0."""
    torch.manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    abar = torch.tensor(0.3)
    z = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    if kind == "flow_prediction":
        sigma = (1 - abar).sqrt() / (abar.sqrt() + (1 - abar).sqrt())
        z = (1 - sigma) * x0 + sigma * eps
    output = {"epsilon": eps, "sample": x0, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0,
              "flow_prediction": eps - x0}[kind]
    eps_hat, x0_hat = split_prediction(output, z, abar, kind)
    torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(join_prediction(eps_hat, z, abar, kind), output, atol=1e-5, rtol=1e-5)


def test_unknown_prediction_type_is_an_error():
    with pytest.raises(ValueError, match="prediction_type"):
        split_prediction(torch.zeros(1), torch.zeros(1), torch.tensor(0.5), "flow")


def test_sample_seed_depends_on_seed_id_and_index_only():
    assert sample_seed(0, "a/b", 0) == sample_seed(0, "a/b", 0)
    assert len({sample_seed(0, "a", 0), sample_seed(1, "a", 0), sample_seed(0, "b", 0), sample_seed(0, "a", 1)}) == 4
    assert 0 <= sample_seed(123, "x", 7) < 2**63


def test_renoise_has_the_forward_process_variance():
    gens = [torch.Generator().manual_seed(0)]
    prev = torch.zeros(1, 1, 256, 256)
    out = renoise(prev, torch.tensor(0.5), torch.tensor(0.8), gens)
    assert abs(out.var().item() - (1 - 0.5 / 0.8)) < 0.01


def test_check_timesteps_refuses_what_the_loop_cannot_run():
    from types import SimpleNamespace
    from diffusers import DDPMScheduler

    def fixed(timesteps):
        scheduler = SimpleNamespace(config=SimpleNamespace(num_train_timesteps=1000, get=lambda k, d=None: d))
        scheduler.set_timesteps = lambda n: setattr(scheduler, "timesteps", torch.tensor(timesteps))
        return scheduler
    check_timesteps(fixed([999, 500, 0]), 3)
    for timesteps, message in (([1000, 500, 1], "gives timestep 1000, outside the model's 0..999"),
                               ([999, 500, -1], "gives timestep -1"),
                               ([999, 500, 500], "repeats timesteps"),
                               ([500, 999, 0], "timesteps that do not decrease")):
        with pytest.raises(ConfigError, match=f"^model.prior.scheduler_config: .*{message}"):
            check_timesteps(fixed(timesteps), 3)
    sd = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    with pytest.raises(ConfigError, match="^model.num_inference_steps: 1001 is more than the 1000 steps"):
        check_timesteps(sd, 1001)
    with pytest.raises(ConfigError, match="gives timestep 1000"):
        check_timesteps(sd, 1000)
    check_timesteps(sd, 50)  # 981..1: in range
    sd.register_to_config(timestep_spacing="trailing")
    check_timesteps(sd, 1000)
    assert sd.timesteps[0] == 999 and sd.timesteps[-1] == 0 and len(sd.timesteps) == 1000


def test_the_module_refuses_a_bad_schedule_when_built(sd_prior, timm_dir):
    from lit_featinv import FeatureInversion, StableDiffusionPrior, TimmExtractor
    prior = StableDiffusionPrior(str(sd_prior), scheduler="diffusers.DDPMScheduler")  # SD 1.x config: steps_offset 1
    with pytest.raises(ConfigError, match="model.prior.scheduler_config: .* gives timestep 1000"):
        FeatureInversion(prior, TimmExtractor(f"local-dir:{timm_dir}"), num_inference_steps=1000)
