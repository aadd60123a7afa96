"""benchmarks/annealing_path.py: the path's share of the posterior's component is its posterior weight at sigma 0,
resampling keeps each target's particles its own, the posterior in null-space coordinates is the exact one, and a
tiny end-to-end run."""
import json
import sys

import torch

from conftest import ROOT
from lit_featinv.models.mixture import GaussianMixture

sys.path.insert(0, str(ROOT / "benchmarks"))
import annealing_path  # noqa: E402


def small_world() -> GaussianMixture:
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    factors = 0.5 * torch.randn(3, 6, 2, generator=gen, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), means, factors,
                           torch.tensor([0.1, 0.3, 0.2], dtype=torch.float64))


def test_at_sigma_zero_the_share_is_the_posterior_weight_and_large_sigma_flattens_it():
    world = small_world()
    matrix = torch.eye(6, dtype=torch.float64)[:2]
    x = world.sample(5, torch.Generator().manual_seed(1))
    post = world.condition(matrix, x @ matrix.T)
    shares = annealing_path.path_shares(world, post, (100.0, 1.0, 0.0))
    assert torch.allclose(shares[:, -1], post.weights.max(1).values)
    assert ((shares >= 0) & (shares <= 1)).all()
    assert torch.allclose(shares[:, 0], world.weights[post.weights.argmax(1)], atol=0.01)  # the prior's weight


def test_weighted_langevin_keeps_each_targets_particles_on_its_own_set():
    world = small_world()
    matrix = torch.eye(6, dtype=torch.float64)[:2]
    x = world.sample(3, torch.Generator().manual_seed(1))
    post = world.condition(matrix, x @ matrix.T)
    coords = post.z.repeat_interleave(8, 0)
    out, resamplings = annealing_path.weighted_langevin(world, post.basis, coords, 24, [2.0, 0.5, 0.1], 5, 0.5,
                                                        0.07, torch.Generator().manual_seed(2), 8)
    assert torch.allclose(out @ post.basis.T, coords, atol=1e-9)  # a particle never takes another target's
    assert resamplings >= 1  # at least the final resampling of every target


def test_the_posterior_in_null_coordinates_has_the_exact_posteriors_mean_and_covariance():
    world = small_world()
    matrix = torch.randn(3, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    post = world.condition(matrix, world.sample(2, torch.Generator().manual_seed(1)) @ matrix.T)
    null, mixtures = annealing_path.posterior_null_mixture(post)
    assert torch.allclose(null @ post.basis.T, torch.zeros(3, 3, dtype=torch.float64), atol=1e-12)
    eye = torch.eye(3, dtype=torch.float64)
    for t, m in enumerate(mixtures):
        assert torch.allclose(m.weights, post.weights[t])
        mean = m.weights @ m.means
        second = sum(w * (f @ f.T + s ** 2 * eye + torch.outer(mu, mu))
                     for w, mu, f, s in zip(m.weights, m.means, m.factors, m.noise_std))
        # the exact posterior: a mixture of Gaussians on the affine set, in null coordinates
        cov = torch.stack([torch.eye(6, dtype=torch.float64) - g @ post.basis for g in post.gain]) @ world.covariance()
        means = post.component_means()[t] @ null.T
        exact_second = sum(w * (null @ c @ null.T + torch.outer(mu, mu))
                           for w, c, mu in zip(post.weights[t], cov, means))
        assert torch.allclose(mean, post.weights[t] @ means)
        assert torch.allclose(second, exact_second, atol=1e-10)


def test_langevin_on_the_posteriors_path_stays_on_the_set():
    world = small_world()
    matrix = torch.eye(6, dtype=torch.float64)[:2]
    post = world.condition(matrix, world.sample(3, torch.Generator().manual_seed(1)) @ matrix.T)
    out = annealing_path.posterior_path_langevin(post, 24, [2.0, 0.5, 0.1], 5, 0.5, 0.07,
                                                 torch.Generator().manual_seed(2), 8)
    assert out.shape == (24, 6) and torch.isfinite(out).all()
    assert torch.allclose(out @ post.basis.T, post.z.repeat_interleave(8, 0), atol=1e-9)


def test_a_tiny_run_writes_its_tables(tmp_path):
    assert annealing_path.main(["--out", str(tmp_path), "--targets", "2", "--generations", "4", "--reference", "16",
                                "--features", "random16", "--levels", "3", "--per-level", "2"]) == 0
    text = (tmp_path / "annealing_path.md").read_text()
    assert "| random16 | " in text and "langevin + exact weights" in text and "on the posterior's path" in text
    assert "random16: Goal 1 (null spread within" in text
    found = json.loads((tmp_path / "annealing_path.json").read_text())["results"]["random16"]
    assert abs(found["shares"][0][-1] - found["posterior_weight"][0]) < 1e-9
    assert all(0 <= v <= 1 for v in found["in_top"]["langevin"])
