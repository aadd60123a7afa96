"""benchmarks/null_space.py: every draw lands on the feature's affine set, coordinates the feature does not see keep the
prior's law (a Gaussian with independent coordinates, fine levels)."""
import sys

import torch

from conftest import ROOT
from lit_featinv.models.mixture import GaussianMixture

sys.path.insert(0, str(ROOT / "benchmarks"))
import null_space  # noqa: E402


def test_draws_are_on_the_affine_set_and_unseen_independent_coordinates_keep_the_prior():
    """One Gaussian in 4-d with independent coordinates (variance 0.09 each), the feature its first coordinate: the
    draws have x_1 = c exactly and the other three the prior's mean and variance (200 levels; 20 levels squeeze them
    to about 0.06: the discretisation the benchmark's default lives with)."""
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.3, -0.2, 0.1, 0.0]], dtype=torch.float64)
    world = GaussianMixture(torch.ones(1, dtype=torch.float64), means, torch.zeros(1, 4, 1, dtype=torch.float64),
                            torch.full((1,), 0.3, dtype=torch.float64))
    basis, rows = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64), 4000
    x = null_space.null_space_sampler(world, basis, torch.full((rows, 1), 0.9, dtype=torch.float64), rows, 200, 1, gen)
    assert torch.allclose(x[:, 0], torch.full((rows,), 0.9, dtype=torch.float64))
    variance = float(world.covariance()[0, 1, 1])
    assert (x[:, 1:].mean(0) - means[0, 1:]).abs().max() < 4 * (variance / rows) ** 0.5
    assert ((x[:, 1:].var(0) / variance - 1).abs() < 0.1).all(), x[:, 1:].var(0)
    coarse = null_space.null_space_sampler(world, basis, torch.full((rows, 1), 0.9, dtype=torch.float64), rows, 20,
                                           1, gen)
    assert float(coarse[:, 1:].var(0).max()) < 0.8 * variance  # the check tells a squeezed sampler apart

