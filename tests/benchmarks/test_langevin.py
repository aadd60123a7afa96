"""benchmarks/langevin.py: every draw lands on the feature's affine set, and on a Gaussian the chain reaches the law
unadjusted Langevin has at its step (the exact conditional, widened by the step's known bias)."""
import sys

import torch

from conftest import ROOT
from lit_featinv.models.mixture import GaussianMixture

sys.path.insert(0, str(ROOT / "benchmarks"))
import langevin  # noqa: E402


def test_draws_are_on_the_affine_set_and_unseen_coordinates_reach_the_langevin_law():
    """One Gaussian in 4-d with independent coordinates (variance v0 = 0.09), the feature its first coordinate: the
    unseen three keep the prior's mean; their variance is unadjusted Langevin's at the last level, v / (1 - eta / 2v)
    with v = v0 + sigma^2, shrunk by Tweedie's last step to (v0 / v)^2 of that; 2 steps per level are too few."""
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.3, -0.2, 0.1, 0.0]], dtype=torch.float64)
    world = GaussianMixture(torch.ones(1, dtype=torch.float64), means, torch.zeros(1, 4, 1, dtype=torch.float64),
                            torch.full((1,), 0.3, dtype=torch.float64))
    basis, rows, sigmas, delta, floor = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64), 20000, [2.0, 0.5, 0.05], \
        0.2, 0.3
    coords = torch.full((rows, 1), 0.9, dtype=torch.float64)
    x = langevin.annealed_langevin(world, basis, coords, rows, sigmas, 100, delta, floor, gen)
    assert torch.allclose(x[:, 0], torch.full((rows,), 0.9, dtype=torch.float64))
    v0, sigma = 0.09, sigmas[-1]
    v, eta = v0 + sigma ** 2, delta * (sigma ** 2 + floor ** 2)
    want = v / (1 - eta / (2 * v)) * (v0 / v) ** 2
    assert (x[:, 1:].mean(0) - means[0, 1:]).abs().max() < 4 * (want / rows) ** 0.5
    assert ((x[:, 1:].var(0) / want - 1).abs() < 0.04).all(), (x[:, 1:].var(0), want)
    short = langevin.annealed_langevin(world, basis, coords, rows, sigmas, 2, delta, floor, gen)
    assert float(short[:, 1:].var(0).min()) > 1.3 * want  # the check tells an unsettled chain apart

