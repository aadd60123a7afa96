"""The prior score (lit_featinv.method.trust.PriorScore): real zoo images score lower than noise; one piece for every
prediction type and noise space (the same eps-model seen as v, sample and flow prediction and in sigma space scores
the same); latent priors through the VAE encoder; deterministic."""
import pytest
import torch

from conftest import FMNIST, ZOO
from lit_featinv import DiffusionPrior, FlowMatchingView, LatentDiffusionPrior
from lit_featinv.method.measure import to_uint8
from lit_featinv.method.trust import PriorScore
from lit_featinv.runs import load_image


def real_images(count: int) -> torch.Tensor:
    return torch.stack([load_image(str(p)) for p in sorted(FMNIST.glob("*.png"))[:count]])


def random_images(count: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return to_uint8(torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(seed)))


def test_real_zoo_images_score_lower_than_noise_and_noised_images():
    prior = DiffusionPrior(str(ZOO / "fmnist-ddpm"))
    real = real_images(4)
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    batch = to_uint8(torch.cat([real, real + 0.3 * noise, torch.rand(real.shape)]))
    scores = PriorScore(steps=5)(prior, batch)
    real, noised, pure = scores.view(3, 4)
    assert scores.dtype == torch.float32 and real.max() < noised.min() and noised.max() < pure.min(), scores


class Reparametrised(DiffusionPrior):
    """An epsilon-prediction model whose output is handed out as ``v_prediction`` or ``sample`` (the same model)."""

    def __init__(self, pretrained: str, kind: str):
        super().__init__(pretrained, scheduler_config={"prediction_type": kind})
        self.kind = kind

    def denoise(self, sample, t):
        eps = super().denoise(sample, t)
        abar = self.scheduler.alphas_cumprod[int(t)]
        a, s = abar.sqrt(), (1 - abar).sqrt()
        x0 = (sample - s * eps) / a
        return a * eps - s * x0 if self.kind == "v_prediction" else x0


@pytest.mark.parametrize("other", ["flow view", "euler (sigma space)", "v_prediction", "sample"])
def test_every_prediction_type_and_noise_space_scores_the_same_model_alike(pixel_prior, other):
    """The same model seen another way: the flow view (flow_prediction, flow noising), Euler (sigma space), v and
    sample prediction: the same noise levels, the same eps estimates, the same score."""
    images, score = random_images(3), PriorScore(steps=4, draws=2)
    base = score(DiffusionPrior(str(pixel_prior)), images)
    prior = {"flow view": lambda: FlowMatchingView(str(pixel_prior)),
             "euler (sigma space)": lambda: DiffusionPrior(str(pixel_prior), scheduler="diffusers.EulerDiscreteScheduler"),
             }.get(other, lambda: Reparametrised(str(pixel_prior), other))()
    assert torch.allclose(score(prior, images), base, rtol=1e-4), (score(prior, images), base)


def test_deterministic_per_image_and_independent_of_the_batch(pixel_prior):
    prior, images = DiffusionPrior(str(pixel_prior)), random_images(3)
    score = PriorScore(steps=3)
    together = score(prior, images)
    assert torch.equal(together, score(prior, images))
    assert torch.allclose(score(prior, images[1:2]), together[1:2], rtol=1e-5)
    assert not torch.allclose(PriorScore(steps=3, seed=1)(prior, images), together)  # the seed fixes the noise


def test_latent_priors_score_the_vae_encoding(latent_prior):
    """A latent prior scores the encoder's mean latent, scaled as decode undoes it (the tiny VAE's scaling 0.7)."""
    prior, images = LatentDiffusionPrior(str(latent_prior)), random_images(2)
    x = images.float() / 127.5 - 1
    assert torch.allclose(prior.encode(x), prior.vae.encode(x).latent_dist.mean * 0.7)
    scores = PriorScore(steps=3)(prior, images)
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (scores > 0).all()


def test_zoo_vae_encode_inverts_decode():
    """decode(encode(x)) is the zoo VAE's reconstruction of x: within its test RMSE (0.106, assets/zoo/README.md)."""
    prior, real = LatentDiffusionPrior(str(ZOO / "fmnist-ldm")), real_images(8) * 2 - 1
    with torch.no_grad():
        rmse = (prior.decode(prior.encode(real)) - real).pow(2).mean().sqrt()
    assert rmse < 0.15, rmse


def test_bad_settings_name_the_key(pixel_prior):
    from lit_featinv.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^model.prior_score.steps: 0 is not a count"):
        PriorScore(steps=0)
    with pytest.raises(ConfigError, match=r"^model.prior_score.draws: 0 is not a count"):
        PriorScore(draws=0)
    with pytest.raises(ConfigError, match=r"^model.prior_score.steps: 2000 is more than the 1000 steps"):
        PriorScore(steps=2000).schedule(DiffusionPrior(str(pixel_prior)))


def test_the_shipped_references_fit_the_zoo_presets():
    """benchmarks/results/prior_score/*.json (docs/results.md, Trust signal) read as references, their prior that of
    the zoo preset, their settings PriorScore's defaults: a run of the preset is compared with them."""
    from conftest import ROOT
    from lit_featinv.analysis.trust import describe, load_reference
    for name in ("fmnist-ddpm", "fmnist-ldm"):
        reference = load_reference(ROOT / "benchmarks" / "results" / "prior_score" / f"{name}.json")
        assert len(reference.scores) == 32 and describe(reference.prior).endswith(f"({name})")
        score = PriorScore()
        assert reference.settings["init_args"] == {"steps": score.steps, "draws": score.draws, "seed": score.seed}
