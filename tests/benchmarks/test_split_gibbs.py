"""benchmarks/split_gibbs.py: the likelihood's step lands on the feature's affine set, the chain at a fixed rho
samples the prior tilted by N(B x; c, rho^2) (a Gaussian: in closed form)."""
import sys

import torch

from conftest import ROOT
from lit_featinv.models.mixture import GaussianMixture

sys.path.insert(0, str(ROOT / "benchmarks"))
import split_gibbs  # noqa: E402


def test_the_chain_at_a_fixed_rho_samples_the_tilted_gaussian():
    """One Gaussian in 4-d, B the first coordinate: x's law at rho is N(mu, S) tilted by N(x_1; c, rho^2); its mean
    is mu + S b (c - mu_1) / (S_11 + rho^2). Every z is on the set z_1 = c."""
    gen = torch.Generator().manual_seed(0)
    factors = torch.randn(1, 4, 2, generator=gen, dtype=torch.float64) * 0.6
    world = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.tensor([[0.3, -0.2, 0.1, 0.0]],
                            dtype=torch.float64), factors, torch.full((1,), 0.3, dtype=torch.float64))
    basis, c, rho = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64), 0.9, 0.4
    rows = 4000
    x, z = split_gibbs.split_gibbs(world, basis, torch.full((rows, 1), c, dtype=torch.float64),
                                   world.sample(rows, gen), [rho] * 40, 40, gen)
    assert torch.allclose(z[:, 0], torch.full((rows,), c, dtype=torch.float64))
    sigma = world.covariance()[0]
    want = world.means[0] + sigma[:, 0] * (c - world.means[0, 0]) / (sigma[0, 0] + rho ** 2)
    error = (x.mean(0) - want).abs().max()
    assert error < 4 * float(x.std(0).max()) / rows ** 0.5, error  # 12 sweeps: 0.055 (not yet mixed)
    untilted = (world.means[0] - want).abs().max()
    assert untilted > 0.2  # the check can tell the tilted mean from the prior's

