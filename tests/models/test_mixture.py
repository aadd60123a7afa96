"""The Gaussian-mixture world: the exact denoiser, unguided sampling of the shipped mixture, the closed-form posterior
of a linear feature, the linear extractor, and their bad inputs."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import FMNIST, ROOT, ZOO
from lit_featinv import GaussianMixturePrior, LinearExtractor
from lit_featinv.errors import ConfigError
from lit_featinv.models import GaussianMixture
from lit_featinv.runs import load_image

GMM = ZOO / "fmnist-gmm"


def tiny_mixture(d: int = 16, k: int = 3, r: int = 2, seed: int = 0) -> GaussianMixture:
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(k, generator=gen) + 0.5
    return GaussianMixture(weights / weights.sum(), 1.5 * torch.randn(k, d, generator=gen),
                           0.7 * torch.randn(k, d, r, generator=gen), 0.2 + torch.rand(k, generator=gen))


def save_mixture(folder, mixture: GaussianMixture, shape, drop: str | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: getattr(mixture, n).float().contiguous() for n in ("weights", "means", "factors", "noise_std")}
    save_file({n: t for n, t in tensors.items() if n != drop}, str(folder / "gmm.safetensors"))
    (folder / "config.json").write_text(json.dumps({"sample_shape": list(shape)}))
    shutil.copytree(GMM / "scheduler", folder / "scheduler")  # the zoo DDPM's real schedule
    return folder


def brute_log_density(mixture: GaussianMixture, x: torch.Tensor, abar: float) -> torch.Tensor:
    """log p_abar(x) from full covariances (torch.distributions), for tiny mixtures."""
    a = torch.tensor(abar, dtype=torch.float64)
    eye = torch.eye(mixture.dim, dtype=torch.float64)
    parts = [torch.distributions.MultivariateNormal(a.sqrt() * mu, a * cov + (1 - a) * eye).log_prob(x)
             for mu, cov in zip(mixture.means, mixture.covariance())]
    return torch.logsumexp(torch.stack(parts, 1) + mixture.weights.log(), 1)


@pytest.mark.parametrize("abar", [0.9999, 0.7, 0.2, 1e-3])
def test_the_noise_prediction_is_the_scaled_autograd_score_of_the_noised_mixture(abar):
    mixture = tiny_mixture()
    x = (math.sqrt(abar) * mixture.sample(6, torch.Generator().manual_seed(1))
         + math.sqrt(1 - abar) * torch.randn(6, 16, dtype=torch.float64)).requires_grad_(True)
    score = torch.autograd.grad(brute_log_density(mixture, x, abar).sum(), x)[0]
    torch.testing.assert_close(mixture.noise_prediction(x.detach(), abar), -math.sqrt(1 - abar) * score,
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mixture.log_prob(x.detach(), abar), brute_log_density(mixture, x.detach(), abar))


def test_the_prior_denoises_at_its_schedules_timesteps_and_between_them(tmp_path):
    mixture = tiny_mixture()
    prior = GaussianMixturePrior(str(save_mixture(tmp_path / "gmm", mixture, (1, 4, 4))))
    assert prior.sample_shape == (1, 4, 4)
    abar = prior.scheduler.alphas_cumprod.double()
    x = torch.randn(3, 1, 4, 4)
    for t in (torch.tensor(999), torch.tensor(500), torch.tensor(0)):
        expected = mixture.noise_prediction(x.flatten(1), abar[int(t)]).float().view_as(x)
        torch.testing.assert_close(prior.denoise(x, t), expected)
    half = prior.level(torch.tensor(500.5))  # a fractional timestep: log-SNR halfway between its neighbours
    snr = abar / (1 - abar)
    assert float(half / (1 - half)) == pytest.approx(math.sqrt(float(snr[500] * snr[501])), rel=1e-9)
    x.requires_grad_(True)
    grad = torch.autograd.grad(prior.denoise(x, torch.tensor(300)).square().sum(), x)[0]  # differentiable
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_unguided_samples_of_the_shipped_mixture_match_its_weights_and_means():
    """DDIM (100 steps) from noise with the exact denoiser: E[responsibility_k] = w_k and the responsibility-weighted
    mean of component k is mu_k for samples of the mixture; both within 5 standard errors."""
    from diffusers import DDIMScheduler
    prior = GaussianMixturePrior(str(GMM))
    mixture, n = prior.mixture, 1024
    scheduler = DDIMScheduler.from_config(prior.scheduler.config)
    scheduler.set_timesteps(100)
    x = torch.randn(n, *prior.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(prior.denoise(x, t), t, x).prev_sample
        log_n, _, _ = mixture.noised(x.flatten(1), 1.0)
        resp = torch.softmax(log_n + mixture.weights.log(), 1)
    mean_resp, se = resp.mean(0), resp.std(0) / math.sqrt(n)
    assert ((mean_resp - mixture.weights).abs() <= 5 * se + 1e-3).all(), (mean_resp, mixture.weights)
    flat = x.flatten(1).double()
    heavy = mixture.weights > 0.03  # components with enough samples for a mean
    for k in heavy.nonzero().flatten().tolist():
        w = resp[:, k] / resp[:, k].sum()
        estimate = w @ flat
        spread = math.sqrt(float(mixture.covariance()[k].trace()) / mixture.dim)  # per pixel
        rms = float((estimate - mixture.means[k]).pow(2).mean().sqrt())
        assert rms < 5 * spread / math.sqrt(float(resp[:, k].sum())), k


@pytest.mark.parametrize("rows", ["left_half", "random"])
def test_posterior_draws_satisfy_the_constraint(rows):
    mixture = GaussianMixturePrior(str(GMM)).mixture
    if rows == "left_half":
        matrix = torch.eye(1024, dtype=torch.float64).view(32, 32, 1024)[:, :16].reshape(512, 1024)
    else:
        matrix = torch.randn(16, 1024, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.stack([load_image(str(p)) for p in sorted(FMNIST.glob("*.png"))[:3]]).flatten(1).double() * 2 - 1
    posterior = mixture.condition(matrix, t @ matrix.T)
    draws = posterior.sample(64, torch.Generator().manual_seed(0))
    residual = ((draws - t[:, None]) @ matrix.T).norm(dim=2) / (t @ matrix.T).norm(dim=1)[:, None]
    assert residual.max() < 1e-9
    assert torch.allclose(posterior.weights.sum(1), torch.ones(3, dtype=torch.float64))
    null = posterior.null_projector()
    assert torch.allclose(null @ null, null, atol=1e-9) and round(float(null.trace())) == 1024 - len(matrix)


def test_the_closed_form_posterior_matches_a_brute_force_reweighting_of_prior_samples():
    """D = 3, one linear measurement: prior draws weighted by N(A x; y, eps^2) give the posterior's mean, covariance
    and component weights as eps -> 0 (eps = 0.01 here; 1.5 million draws)."""
    mixture = tiny_mixture(d=3, k=3, r=1, seed=3)
    matrix = torch.tensor([[1.0, -0.5, 0.25]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    y = matrix @ mixture.sample(1, gen)[0]
    posterior = mixture.condition(matrix, y[None])
    draws = posterior.sample(20000, gen)[0]
    components = torch.multinomial(mixture.weights, 1_500_000, replacement=True, generator=gen)
    prior = mixture.sample_components(components, gen)
    eps = 0.01
    w = torch.exp(-((prior @ matrix.T)[:, 0] - y) ** 2 / (2 * eps ** 2))
    w = w / w.sum()
    assert 1 / float((w ** 2).sum()) > 2000  # enough effective draws
    brute_mean = w @ prior
    brute_cov = (prior - brute_mean).T @ ((prior - brute_mean) * w[:, None])
    torch.testing.assert_close(posterior.mean()[0], brute_mean, atol=0.05, rtol=0)
    torch.testing.assert_close(draws.T.cov(), brute_cov, atol=0.05, rtol=0)
    brute_weights = torch.stack([w[components == k].sum() for k in range(3)])
    torch.testing.assert_close(posterior.weights[0], brute_weights, atol=0.03, rtol=0)


def test_the_linear_extractor_gives_a_x_of_an_image_saved_and_read_back(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(tmp_path / "t.png")
    matrix = torch.randn(7, 1024, generator=torch.Generator().manual_seed(0))
    torch.save(matrix, tmp_path / "a.pt")
    extractor = LinearExtractor(str(tmp_path / "a.pt"))
    feature = extractor.measure(load_image(str(tmp_path / "t.png"))[None])
    expected = matrix.double() @ (torch.from_numpy(pixels).double().flatten() / 127.5 - 1)
    torch.testing.assert_close(feature[0].double(), expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (torch.randn(4, 1000), "its width 1000 is not the images' D = 1x32x32 = 1024"),
    (torch.tensor([[float("nan")] * 1024]), "has 1024 non-finite value(s) of 1024"),
])
def test_a_bad_matrix_is_one_line_naming_the_key(tmp_path, bad, message):
    from lit_featinv.app.cli import main
    path = tmp_path / "bad.safetensors"
    save_file({"matrix": bad}, str(path))
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", "gmm/guided", "--model.init_args.extractor.init_args.matrix", str(path),
              "--data.init_args.limit", "1", "--trainer.default_root_dir", str(tmp_path)])
    text = str(stop.value)
    assert text.startswith("lit-featinv: error: model.extractor.matrix: ") and message in text and "\n" not in text


def test_a_mixture_folder_missing_a_tensor_is_one_line_naming_it(tmp_path):
    folder = save_mixture(tmp_path / "gmm", tiny_mixture(), (1, 4, 4), drop="factors")
    with pytest.raises(ConfigError, match=r"^model.prior.pretrained: .*gmm.safetensors has no tensor 'factors' \(a "
                                          r"mixture holds weights, means, factors, noise_std\)$"):
        GaussianMixturePrior(str(folder))


def test_the_preset_takes_a_matrix_targets_and_generations_from_the_command_line(tmp_path):
    """configs/gmm/guided.yaml with the overrides docs/extractors.md names (LinearExtractor's matrix, the target
    images), on two targets, 5 steps."""
    from lit_featinv.app.cli import main
    matrix = torch.randn(16, 1024, generator=torch.Generator().manual_seed(0))
    save_file({"matrix": matrix}, str(tmp_path / "random16.safetensors"))
    (tmp_path / "targets").mkdir()
    for p in sorted(FMNIST.glob("*.png"))[:2]:
        shutil.copy(p, tmp_path / "targets")
    main(["predict", "--config", "gmm/guided", "--model.init_args.extractor.init_args.matrix",
          str(tmp_path / "random16.safetensors"), "--data.init_args.images", str(tmp_path / "targets"),
          "--model.init_args.samples_per_target", "3", "--model.init_args.num_inference_steps", "5",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run")])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["status"] == "ok" and r["nfe"] == 40 for r in rows)
    saved = load_image(str(tmp_path / "run" / rows[0]["image"]))
    target = load_image(str(tmp_path / "targets" / f"{rows[0]['id']}.png"))
    cos = torch.nn.functional.cosine_similarity(matrix @ (saved.flatten() * 2 - 1), matrix @ (target.flatten() * 2 - 1),
                                                dim=0)
    assert float(cos) == pytest.approx(rows[0]["cosine"], abs=1e-5)
    assert (ROOT / "assets" / "features" / "left_half.safetensors").is_file()


def test_any_variance_preserving_scheduler_steps_the_mixture():
    """Euler in sigma space (fractional timesteps, scaled inputs) is DDIM (eta 0) on the same model: on the mixture
    their unguided samples agree; a multistep solver and DDPM step it too."""
    from lit_featinv import FeatureInversion

    def samples(scheduler: str) -> torch.Tensor:
        model = FeatureInversion.from_config(
            "gmm/guided", prior={"class_path": "lit_featinv.GaussianMixturePrior",
                                 "init_args": {"pretrained": str(GMM), "scheduler": scheduler}},
            guidance={"class_path": "lit_featinv.UNetGradient", "init_args": {"scale": 0.0}}, recurrence=1,
            num_inference_steps=20, prior_score=None, progress=False)
        return model.generate(torch.zeros(8, 512), list(range(8)))["image"]
    ddim = samples("diffusers.DDIMScheduler")
    torch.testing.assert_close(samples("diffusers.EulerDiscreteScheduler"), ddim, atol=2e-3, rtol=0)
    for other in ("diffusers.DPMSolverMultistepScheduler", "diffusers.DDPMScheduler"):
        images = samples(other)
        assert torch.isfinite(images).all() and (images - ddim).abs().max() > 1e-3  # its own samples
