"""Annealed Langevin on the feature's affine set, in the exact-posterior world (issue 35, a sixth lever; not a
lit_featinv component).

For a linear feature A x = y the posterior p(x | A x = y) is the prior restricted to the affine set {x : B x = c} (B an
orthonormal basis of A's row space, c the target's coordinates there). The sampler is annealed Langevin dynamics
(Song and Ermon 2019) whose every level targets the noised prior p_sigma (x_sigma = x + sigma n) restricted to that
set: x moves only in the null space, by

    x <- x + eta P s_sigma(x) + sqrt(2 eta) P n,   s_sigma(x) = -eps(sqrt(abar) x, abar) / sigma,  abar = 1 / (1 + sigma^2)

(P = I - B^T B, eps the mixture's exact noise prediction), ``--per-level`` steps at each of ``--levels`` values of
sigma, geometric from ``--sigma-max`` to ``--sigma-min``. As sigma -> 0 the level's target
is the exact posterior: unlike guidance (DPS) or the null-space projection of the clean estimate (DDNM), every level
has a defined stationary law, and only the number of steps limits how close the chain gets. The step size is
eta = ``--delta`` x (sigma^2 + ``--floor``^2): Song and Ermon's delta x sigma^2 stalls below the mixture's isotropic
floor (0.072-0.23, the smallest spread of its components), where the chain would need ~ floor^2 / eta steps to
settle; a trained diffusion model states no such floor, the mixture does. The last step is
Tweedie's denoising at sigma-min, kept on the set. Cost: levels x per-level + 1 denoiser evaluations per generation,
no backward; 20 x 20 = 400, as ``gmm/guided``. Every generation starts from x_p + sigma-max P n.

Run: python benchmarks/langevin.py --out runs/langevin [--levels 20 --per-level 20 --threads 2]
Writes OUT/langevin.md (the table in posterior.md's measures, the Goal 1 line without SW) and OUT/langevin.json.
"""
from __future__ import annotations

import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import probe  # noqa: E402
from split_gibbs import project  # noqa: E402


def score(world, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The score of the prior noised to ``sigma`` (x_sigma = x + sigma n) at x, from the exact noise prediction."""
    abar = torch.tensor(1 / (1 + sigma ** 2), dtype=torch.float64)
    return -world.noise_prediction(abar.sqrt() * x, abar) / sigma


def anneal(x: torch.Tensor, score, noise, sigmas: list[float], per_level: int, delta: float, floor: float,
           after_level=None) -> torch.Tensor:
    """The annealed Langevin loop from x: ``per_level`` steps x <- x + eta score(x, sigma) + sqrt(2 eta) noise() at
    each sigma, eta = delta (sigma^2 + floor^2); ``after_level(i, x) -> x``, if given, acts on the chains after the
    steps of level i (e.g. weights and resampling); last, Tweedie's denoising at the smallest sigma."""
    for i, sigma in enumerate(sigmas):
        eta = delta * (sigma ** 2 + floor ** 2)
        for _ in range(per_level):
            x = x + eta * score(x, sigma) + math.sqrt(2 * eta) * noise()
        x = after_level(i, x) if after_level else x
    return x + sigmas[-1] ** 2 * score(x, sigmas[-1])


def annealed_langevin(world, basis: torch.Tensor, coords: torch.Tensor, rows: int, sigmas: list[float],
                      per_level: int, delta: float, floor: float, gen: torch.Generator,
                      after_level=None) -> torch.Tensor:
    """Draws [rows, D] on the affine set basis x = coords (coords [rows, n]): :func:`anneal` with the prior's score
    and noise kept on the set."""
    noise = lambda: project(torch.randn(rows, world.dim, generator=gen, dtype=torch.float64), basis, 0)  # noqa: E731
    return anneal(coords @ basis + sigmas[0] * noise(), lambda x, sigma: project(score(world, x, sigma), basis, 0),
                  noise, sigmas, per_level, delta, floor, after_level)


def arguments(p):
    """The probe's own arguments, added to parser ``p`` (returned)."""
    p.add_argument("--levels", type=int, default=20)
    p.add_argument("--per-level", type=int, default=20, help="Langevin steps per level")
    p.add_argument("--sigma-max", type=float, default=5.0)
    p.add_argument("--sigma-min", type=float, default=0.02)
    p.add_argument("--delta", type=float, default=0.5, help="step size eta = delta x (sigma^2 + floor^2)")
    p.add_argument("--floor", type=float, default=0.07, help="the mixture's smallest floor is 0.072")
    return p


def sampler(a):
    """The probe as ``draw(world, basis, coords, rows, gen)`` with the settings of ``a``."""
    sigmas = torch.logspace(math.log10(a.sigma_max), math.log10(a.sigma_min), a.levels).tolist()
    return lambda world, basis, coords, rows, gen: annealed_langevin(world, basis, coords, rows, sigmas, a.per_level,
                                                                     a.delta, a.floor, gen)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = arguments(probe.parser(__doc__, "runs/langevin")).parse_args(argv)
    return probe.run(a, argv, "langevin", sampler(a), "Annealed Langevin on the affine set",
                     f"{a.levels} levels x {a.per_level} steps + 1 = {a.levels * a.per_level + 1} denoiser evaluations "
                     f"per generation, sigma {a.sigma_max:g} -> {a.sigma_min:g}, eta = {a.delta:g} (sigma^2 + "
                     f"{a.floor:g}^2).")


if __name__ == "__main__":
    sys.exit(main())
