"""The particle sampler (``model.sampler``): systematic resampling within a target, the weights it keeps, that it
samples the tilted posterior of a tiny mixture, that lam = 0 changes nothing, that a target's generations do not
depend on its batch, and its bad inputs."""
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import save_file

from conftest import FMNIST, ZOO
from lit_featinv import FeatureInversion, ParticleSampler
from lit_featinv.errors import ConfigError
from lit_featinv.method import ess, systematic
from lit_featinv.models import GaussianMixture
from lit_featinv.runs import collate, inversion, target_items

GMM = ZOO / "fmnist-gmm"


def test_systematic_resampling_draws_each_particle_about_its_weight_times():
    w = torch.tensor([0.5, 0.25, 0.125, 0.125])
    assert systematic(w, 8, 0.3).tolist() == [0, 0, 0, 0, 1, 1, 2, 3]
    assert systematic(torch.full((5,), 0.2), 5, 0.999).tolist() == [0, 1, 2, 3, 4]  # equal weights: each once
    assert ess(torch.zeros(2, 4)).tolist() == [1.0, 1.0]
    assert float(ess(torch.tensor([[0.0, -math.inf, -math.inf, -math.inf]]))) == pytest.approx(0.25)


def test_resampling_stays_within_each_target():
    state = ParticleSampler(particles=4, lam=1.0, ess_threshold=0.9).start(3, [1, 2, 3], "cpu")
    loss = torch.tensor([0.0, 50, 50, 50, 50, 0, 50, 50, 1, 1, 1, 1])  # one good particle in targets 0 and 1
    state.reweight(loss)
    parents = state.resample(0)
    assert parents.view(3, 4)[0].tolist() == [0] * 4 and parents.view(3, 4)[1].tolist() == [5] * 4
    assert parents.view(3, 4)[2].tolist() == [8, 9, 10, 11]  # equal weights: not resampled
    assert state.resampled == [[0], [0], []] and state.ess[2] == [1.0]
    assert torch.equal(state.log_weights[:2], torch.zeros(2, 4))


def test_relative_weighs_each_targets_loss_over_its_features_squared_norm():
    features = torch.tensor([[3.0, 4.0], [0.6, 0.8]])  # |f*|^2 25 and 1: a pooled feature and a softmax's scale
    loss = torch.tensor([0.0, 2.5, 0.0, 0.1])  # the same relative error (0.1) in both targets
    relative = ParticleSampler(particles=2, lam=10.0, potential="sum", relative=True).start(2, [1, 2], "cpu", features)
    plain = ParticleSampler(particles=2, lam=10.0, potential="sum").start(2, [1, 2], "cpu", features)
    for state in (relative, plain):
        state.reweight(loss)
        state.finish(loss)
    assert relative.log_weights.flatten().tolist() == pytest.approx([0.0, -1.0, 0.0, -1.0])  # lam x relative error
    assert plain.log_weights.flatten().tolist() == pytest.approx([0.0, -25.0, 0.0, -1.0])


def test_a_particle_with_a_nan_loss_gets_weight_zero():
    state = ParticleSampler(particles=2, lam=1.0).start(2, [1, 2], "cpu")
    with pytest.warns(UserWarning, match=r"model.sampler: 3 particle\(s\) became NaN or Inf .*: weight 0"):
        state.reweight(torch.tensor([1.0, math.nan, math.nan, math.nan]))
    assert state.log_weights[0, 1] == -math.inf and state.dead().tolist() == [False, True]
    rows, _ = state.choose(1)  # a dead target's pick is a failed particle: reported as failed, as a NaN generation


@pytest.mark.parametrize("kwargs, key", [({"lam": -1.0}, "model.sampler.lam"),
                                         ({"ess_threshold": 0.0}, "model.sampler.ess_threshold"),
                                         ({"ess_threshold": 1.5}, "model.sampler.ess_threshold"),
                                         ({"potential": "best"}, "model.sampler.potential"),
                                         ({"particles": 0}, "model.sampler.particles"),
                                         ({"start_step": -1}, "model.sampler.start_step")])
def test_bad_sampler_values_are_one_line_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        ParticleSampler(**kwargs)


def decoder(**init_args) -> FeatureInversion:
    return FeatureInversion.from_config("gmm/guided", prior_score=None, progress=False, num_inference_steps=10,
                                        **init_args)


def test_more_saved_generations_than_particles_is_one_line(tmp_path):
    from lit_featinv.app.cli import main
    sampler = json.dumps({"class_path": "lit_featinv.ParticleSampler", "init_args": {"particles": 4}})
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", "gmm/guided", "--model.init_args.samples_per_target", "8",
              "--model.init_args.sampler", sampler, "--trainer.default_root_dir", str(tmp_path)])
    assert str(stop.value) == ("lit-featinv: error: model.samples_per_target: 8 saved generations from 4 particles "
                               "(model.sampler.particles): give at least as many particles")


def targets(count: int) -> torch.Tensor:
    from lit_featinv.runs import load_image
    return torch.stack([load_image(str(p)) for p in sorted(FMNIST.glob("*.png"))[:count]])


def test_lam_zero_reproduces_the_sampler_without_particles():
    plain = inversion(decoder(samples_per_target=3).predict_step(collate(target_items(images=targets(2)))), "pt")
    sampler = {"class_path": "lit_featinv.ParticleSampler", "init_args": {"particles": 3, "lam": 0.0}}
    same = inversion(decoder(samples_per_target=3, sampler=sampler).predict_step(
        collate(target_items(images=targets(2)))), "pt")
    assert torch.equal(same.images, plain.images) and torch.equal(same.best_images, plain.best_images)
    assert [m["weight"] for m in same.metrics] == pytest.approx([1 / 3] * 6)
    assert all(m["particles"]["resampled"] == [] and m["nfe"] == p["nfe"] for m, p in zip(same.metrics, plain.metrics))


def test_before_start_step_the_particles_are_neither_weighed_nor_resampled():
    """start_step 6 of 10: equal weights (ESS 1) and no resampling before it, the potentials' work after it."""
    sampler = {"class_path": "lit_featinv.ParticleSampler", "init_args": {"particles": 4, "lam": 5.0,
                                                                          "start_step": 6}}
    run = inversion(decoder(samples_per_target=4, sampler=sampler, recurrence=2).predict_step(
        collate(target_items(images=targets(2)))), "pt")
    records = [m["particles"] for m in run.metrics]
    assert all(r["ess"][:6] == [1.0] * 6 for r in records)
    assert all(r["resampled"] and min(r["resampled"]) >= 6 for r in records)  # it resampled, from step 6 on
    state = ParticleSampler(particles=2, lam=1.0, ess_threshold=0.9, start_step=3).start(1, [1], "cpu")
    state.reweight(torch.tensor([0.0, 40.0]), step=2)
    assert torch.equal(state.log_weights, torch.zeros(1, 2)) and state.resample(2) is None
    state.reweight(torch.tensor([0.0, 40.0]), step=3)
    assert state.log_weights[0, 1] == -40.0 and state.resample(3) is not None


def test_a_targets_generations_do_not_depend_on_its_batch():
    """Its particles' noise and its resampling draw from its own generators (run seed, target id): the second target
    alone gives the same bytes and weights as in a batch of two (so as in another process or after a resume)."""
    sampler = {"class_path": "lit_featinv.ParticleSampler", "init_args": {"particles": 6, "lam": 0.05}}
    model = decoder(samples_per_target=2, sampler=sampler, recurrence=2)
    items = target_items(images=targets(2))
    both = inversion(model.predict_step(collate(items)), "pt")
    alone = inversion(model.predict_step(collate(items[1:])), "pt")
    assert any(m["particles"]["resampled"] for m in both.metrics)  # it resampled
    assert torch.equal(alone.images, both.images[2:]) and torch.equal(alone.best_images, both.best_images[2:])
    assert [m["weight"] for m in alone.metrics] == [m["weight"] for m in both.metrics[2:]]
    assert all(0 <= m["particles"]["index"] < 6 for m in both.metrics)


def tilted_posterior(mixture: GaussianMixture, matrix: torch.Tensor, y: torch.Tensor, lam: float):
    """Mean and covariance of p(x) exp(-lam ||A x - y||^2) for a Gaussian mixture p (closed form)."""
    precision = 2 * lam * matrix.T @ matrix
    means, covs, logw = [], [], []
    for w, mu, cov in zip(mixture.weights, mixture.means, mixture.covariance()):
        post = torch.linalg.inv(torch.linalg.inv(cov) + precision)
        covs.append(post)
        means.append(post @ (torch.linalg.solve(cov, mu) + 2 * lam * matrix.T @ y))
        marginal = torch.distributions.MultivariateNormal(matrix @ mu, matrix @ cov @ matrix.T + torch.eye(
            len(y), dtype=torch.float64) / (2 * lam))
        logw.append(w.log() + marginal.log_prob(y))
    weights = torch.softmax(torch.stack(logw), 0)
    mean = sum(w * m for w, m in zip(weights, means))
    second = sum(w * (c + torch.outer(m, m)) for w, m, c in zip(weights, means, covs))
    return mean, second - torch.outer(mean, mean)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """D = 16 (1x4x4), two components mostly inside [-1, 1], a 2-d linear feature, a target feature y."""
    folder = tmp_path_factory.mktemp("tiny_world")
    gen = torch.Generator().manual_seed(0)
    mixture = GaussianMixture(torch.tensor([0.6, 0.4]), 0.3 * torch.randn(2, 16, generator=gen),
                              0.08 * torch.randn(2, 16, 2, generator=gen), torch.tensor([0.05, 0.06]))
    (folder / "gmm").mkdir()
    save_file({n: getattr(mixture, n).float().contiguous() for n in ("weights", "means", "factors", "noise_std")},
              str(folder / "gmm" / "gmm.safetensors"))
    (folder / "gmm" / "config.json").write_text(json.dumps({"sample_shape": [1, 4, 4]}))
    shutil.copytree(GMM / "scheduler", folder / "gmm" / "scheduler")
    matrix = torch.randn(2, 16, generator=gen, dtype=torch.float64) / 4
    save_file({"matrix": matrix.float()}, str(folder / "a.safetensors"))
    return folder, mixture, matrix, matrix @ mixture.sample(1, gen)[0]


def tilted_samples(world, guidance: dict, lam: float, correct: bool, n: int = 2000) -> torch.Tensor:
    """n particles of the prior's DDPM steps (250, K = 1), the proposal guided by ``guidance``, resampled by their
    potentials for p(x) exp(-lam ||A x - y||^2)."""
    folder, _, _, y = world
    model = FeatureInversion.from_config(
        "gmm/guided", prior={"class_path": "lit_featinv.GaussianMixturePrior",
                             "init_args": {"pretrained": str(folder / "gmm"), "scheduler": "diffusers.DDPMScheduler"}},
        extractor={"class_path": "lit_featinv.LinearExtractor", "init_args": {"matrix": str(folder / "a.safetensors")}},
        guidance=guidance, recurrence=1, num_inference_steps=250, samples_per_target=n, prior_score=None,
        progress=False, sampler={"class_path": "lit_featinv.ParticleSampler",
                                 "init_args": {"particles": n, "lam": lam, "correct_proposal": correct}})
    out = inversion(model.predict_step(collate(target_items(features=y[None].float()))), "pt")
    return (out.images * 2 - 1).flatten(1).double()


PLAIN = {"class_path": "lit_featinv.UNetGradient", "init_args": {"scale": 0.0}}
TWISTED = {"class_path": "lit_featinv.TwistedGradient", "init_args": {"scale": 20.0}}


@pytest.mark.parametrize("guidance, correct", [(PLAIN, False), (TWISTED, True)], ids=["prior_steps", "twisted"])
def test_the_particles_sample_the_tilted_posterior_of_a_tiny_mixture(tiny_world, guidance, correct):
    """lam = 20: 2,000 particles, of the prior's own steps or of the twisted proposal with its correction, against the
    closed-form mean and covariance of p(x) exp(-lam ||A x - y||^2); within sampling and discretisation error."""
    _, mixture, matrix, y = tiny_world
    x = tilted_samples(tiny_world, guidance, 20.0, correct)
    mean, cov = tilted_posterior(mixture, matrix, y, 20.0)
    assert (x.mean(0) - mean).abs().max() < 0.025, (x.mean(0) - mean).abs().max()
    assert (x.T.cov() - cov).abs().max() < 0.018, (x.T.cov() - cov).abs().max()
    prior_mean = mixture.weights @ mixture.means  # the tilt matters: the posterior is not the prior
    assert (mean - prior_mean).abs().max() > 0.1 and (cov - mixture.total_covariance()).abs().max() > 0.1


def test_without_its_correction_the_twisted_proposal_overshoots(tiny_world):
    """The same twisted proposal whose weights leave out the step's density ratio tilts twice: 4x the error."""
    _, mixture, matrix, y = tiny_world
    x = tilted_samples(tiny_world, TWISTED, 20.0, False)
    mean, _ = tilted_posterior(mixture, matrix, y, 20.0)
    assert (x.mean(0) - mean).abs().max() > 0.1


def test_the_step_correction_reads_the_schedulers_noise():
    """DDPM's step: the correction's sigma and z are the scheduler's own (fixed_small variance, the noise drawn);
    with the guided output equal to the plain one the log ratio is 0, with a shift d it is -(d.z)/sigma -
    |d|^2/(2 sigma^2)."""
    from diffusers import DDPMScheduler
    from lit_featinv.method import corrected_step
    from lit_featinv.method.particles import clone
    scheduler = DDPMScheduler.from_pretrained(str(GMM), subfolder="scheduler")
    scheduler.set_timesteps(50)
    t, sample, plain = scheduler.timesteps[10], torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    _, zero = corrected_step(scheduler, plain, plain, t, sample, [clone(g) for g in gens])
    assert zero.abs().max() < 1e-9
    shift = 0.01 * torch.randn(3, 1, 4, 4)
    taken, log_ratio = corrected_step(scheduler, plain + shift, plain, t, sample, [clone(g) for g in gens])
    prev_t = scheduler.previous_timestep(t)
    abar, abar_prev = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[prev_t]
    sigma = ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    z = torch.stack([torch.randn(1, 4, 4, generator=g) for g in gens])
    coefficient = abar_prev.sqrt() * (1 - abar / abar_prev) / (1 - abar) * -(1 - abar).sqrt() / abar.sqrt()
    d = coefficient * shift  # the DDPM mean moves by this for an epsilon moved by shift
    expected = -(d * z).sum((1, 2, 3)) / sigma - (d * d).sum((1, 2, 3)) / (2 * sigma ** 2)
    torch.testing.assert_close(log_ratio, expected.double(), rtol=1e-3, atol=1e-4)


def test_a_particle_run_writes_weights_and_the_report_shows_its_effective_sample_size(tmp_path):
    from lit_featinv.app.cli import main
    from lit_featinv.app.report import make_report
    (tmp_path / "targets").mkdir()
    for p in sorted(FMNIST.glob("*.png"))[:2]:
        shutil.copy(p, tmp_path / "targets")
    sampler = json.dumps({"class_path": "lit_featinv.ParticleSampler", "init_args": {"particles": 4, "lam": 0.05}})
    main(["predict", "--config", "gmm/guided", "--model.init_args.sampler", sampler, "--model.init_args.samples_per_target",
          "2", "--model.init_args.num_inference_steps", "6", "--model.init_args.recurrence", "2",
          "--data.init_args.images", str(tmp_path / "targets"), "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path / "run")])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["weight"] == 0.5 and len(r["particles"]["ess"]) == 6 for r in rows)
    assert all(r["nfe"] == 6 * 2 * 4 // 2 for r in rows)  # the target's particles' evaluations over its 2 saved
    make_report([str(tmp_path / "run"), "--out", str(tmp_path / "report.html")])
    page = (tmp_path / "report.html").read_text()
    assert page.count("ESS: 0.000 .. 1.000") == 2 and page.count("weights 0.500, 0.500") == 2


@pytest.mark.parametrize("scheduler", ["diffusers.DPMSolverMultistepScheduler", "diffusers.EulerAncestralDiscreteScheduler"])
def test_particles_work_with_a_multistep_and_an_ancestral_scheduler(scheduler):
    """A multistep scheduler's history follows a resampled particle (its parent's earlier outputs); the same run
    twice gives the same bytes."""
    prior = {"class_path": "lit_featinv.GaussianMixturePrior", "init_args": {"pretrained": str(GMM),
                                                                            "scheduler": scheduler}}
    sampler = {"class_path": "lit_featinv.ParticleSampler", "init_args": {"particles": 4, "lam": 0.05}}
    model = decoder(prior=prior, samples_per_target=2, sampler=sampler, recurrence=1)
    first = inversion(model.predict_step(collate(target_items(images=targets(2)))), "pt")
    again = inversion(model.predict_step(collate(target_items(images=targets(2)))), "pt")
    assert any(m["particles"]["resampled"] for m in first.metrics) and torch.isfinite(first.images).all()
    assert torch.equal(first.images, again.images)
    assert min(m["cosine"] for m in first.metrics) > 0.5


def test_particles_on_a_latent_prior(latent_prior, timm_dir):
    from lit_featinv import LatentDiffusionPrior, TimmExtractor
    module = FeatureInversion(LatentDiffusionPrior(str(latent_prior)), TimmExtractor(f"local-dir:{timm_dir}"),
                              num_inference_steps=4, recurrence=2, progress=False, samples_per_target=2, eta=1.0,
                              prior_score=None, sampler=ParticleSampler(particles=4, lam=100.0, ess_threshold=1.0))
    records = module.predict_step(collate(target_items(images=torch.rand(2, 1, 16, 16))))
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert all(len(r["metrics"]["particles"]["resampled"]) == 4 for r in records)  # threshold 1: every step


@pytest.mark.parametrize("poisoned", [1, 4])
def test_nan_particles_get_weight_zero_and_a_target_with_none_left_fails(monkeypatch, poisoned):
    """The first ``poisoned`` particles of the batch (target 0 has 4) turn NaN at t < 500: one of them is dropped by
    its weight and the target's generations are fine; all of them and the target's generations are failed."""
    from lit_featinv import GaussianMixturePrior
    denoise = GaussianMixturePrior.denoise

    def nan_at_the_end(self, sample, t):
        out = denoise(self, sample, t)
        return torch.cat([out[:poisoned] * float("nan"), out[poisoned:]]) if int(t) < 500 else out
    monkeypatch.setattr(GaussianMixturePrior, "denoise", nan_at_the_end)
    sampler = {"class_path": "lit_featinv.ParticleSampler", "init_args": {"particles": 4, "lam": 0.05}}
    with pytest.warns(UserWarning, match="NaN or Inf"):
        records = decoder(samples_per_target=2, sampler=sampler, recurrence=1).predict_step(
            collate(target_items(images=targets(2))))
    status = [r["status"] for r in records]
    assert status == (["ok"] * 4 if poisoned == 1 else ["nonfinite", "nonfinite", "ok", "ok"])


def test_a_resumed_particle_run_ends_with_the_same_bytes(tmp_path):
    """Three targets, one a batch: the second target's lines and files removed (as a run killed after the first),
    then the same command again: every file and metrics line as in the uninterrupted run."""
    from conftest import assert_same, lines, snapshot
    from lit_featinv.app.cli import main
    (tmp_path / "targets").mkdir()
    for p in sorted(FMNIST.glob("*.png"))[:3]:
        shutil.copy(p, tmp_path / "targets")
    sampler = json.dumps({"class_path": "lit_featinv.ParticleSampler", "init_args": {"particles": 4, "lam": 0.05}})
    args = ["predict", "--config", "gmm/guided", "--model.init_args.sampler", sampler,
            "--model.init_args.samples_per_target", "2", "--model.init_args.num_inference_steps", "6",
            "--model.init_args.recurrence", "2", "--model.init_args.eta", "1.0", "--data.init_args.batch_size", "1",
            "--data.init_args.images", str(tmp_path / "targets"), "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "run")]
    main(args)
    out = tmp_path / "run"
    whole = snapshot(out)
    second = sorted(r["id"] for r in lines(out))[2]
    kept = [line for line in (out / "metrics.jsonl").read_text().splitlines() if json.loads(line)["id"] != second]
    (out / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    for path in out.rglob(f"{second}*.png"):
        path.unlink()
    main(args)
    assert_same(snapshot(out), whole)


def test_the_linear_sampler_samples_the_exact_posterior_of_a_tiny_mixture(tiny_world):
    """LinearParticleSampler (MCGdiff), 4,000 particles of the prior's DDPM steps: every particle on the constraint
    A x = y, and the closed-form posterior's mean and covariance within the error of its weights (the same steps
    without them: 0.45 off the mean)."""
    folder, mixture, matrix, y = tiny_world
    n = 4000
    model = FeatureInversion.from_config(
        "gmm/guided", prior={"class_path": "lit_featinv.GaussianMixturePrior",
                             "init_args": {"pretrained": str(folder / "gmm"), "scheduler": "diffusers.DDPMScheduler"}},
        extractor={"class_path": "lit_featinv.LinearExtractor", "init_args": {"matrix": str(folder / "a.safetensors")}},
        guidance=PLAIN, recurrence=1, num_inference_steps=100, samples_per_target=n, prior_score=None, progress=False,
        sampler={"class_path": "lit_featinv.LinearParticleSampler", "init_args": {"particles": n}})
    out = inversion(model.predict_step(collate(target_items(features=y[None].float()))), "pt")
    x = (out.images * 2 - 1).flatten(1).double()
    exact = mixture.condition(matrix, y[None]).sample(20000, torch.Generator().manual_seed(1))[0].clamp(-1, 1)
    residual = lambda v: (v @ matrix.T - y).abs().max(1).values  # noqa: E731  (clamping and 8 bits move it a little)
    assert residual(x).median() < 0.01 and residual(x).median() < residual(exact).median() + 0.005
    assert (x.mean(0) - exact.mean(0)).abs().max() < 0.05, (x.mean(0) - exact.mean(0)).abs().max()
    assert (x.T.cov() - exact.T.cov()).abs().max() < 0.025, (x.T.cov() - exact.T.cov()).abs().max()
    assert any(m["particles"]["resampled"] for m in out.metrics)
    prior = mixture.sample(20000, torch.Generator().manual_seed(2)).clamp(-1, 1)  # the posterior is not the prior
    assert (exact.mean(0) - prior.mean(0)).abs().max() > 0.1


def test_the_linear_sampler_keeps_a_targets_bytes_in_any_batch_and_names_what_it_needs(timm_dir):
    """On the mixture world's left half (DDIM with eta 1): a target alone gives the bytes it gets in a batch of two,
    and every saved generation meets the feature but for clamping and 8 bits. A deterministic step, or a feature
    that is not linear, is one line naming the key."""
    sampler = {"class_path": "lit_featinv.LinearParticleSampler", "init_args": {"particles": 4}}
    model = decoder(samples_per_target=2, sampler=sampler, recurrence=1, eta=1.0, guidance=PLAIN)
    items = target_items(images=targets(2))
    both = inversion(model.predict_step(collate(items)), "pt")
    alone = inversion(model.predict_step(collate(items[1:])), "pt")
    assert torch.equal(alone.images, both.images[2:]) and [m["weight"] for m in alone.metrics] == [
        m["weight"] for m in both.metrics[2:]]
    assert all(m["rel_l2"] < 0.05 for m in both.metrics), [m["rel_l2"] for m in both.metrics]
    with pytest.raises(ConfigError, match=r"^model.sampler: DDIMScheduler's step adds no noise"):
        decoder(samples_per_target=2, sampler=sampler, recurrence=1, guidance=PLAIN).predict_step(collate(items))
    with pytest.raises(ConfigError, match=r"^model.extractor: TimmExtractor is not linear"):
        decoder(samples_per_target=2, sampler=sampler, eta=1.0, extractor={
            "class_path": "lit_featinv.TimmExtractor", "init_args": {"model_name": f"local-dir:{timm_dir}"}}
        ).predict_step(collate(items))
