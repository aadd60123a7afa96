"""Split Gibbs probe in the exact-posterior world (issue 35, a fourth lever; not a lit_featinv component).

The sampler of PnP-DM (Wu et al. 2024, "Principled probabilistic imaging using diffusion models as plug-and-play
priors"), for a linear feature A x = y: an auxiliary z = x + rho n, and Gibbs sweeps that alternate
- the likelihood's exact step: z | x on the affine set B z = c (B an orthonormal basis of A's row space, c the
  target's coordinates there), N(x, rho^2) restricted to it: z = x - B^T (B x - c) + rho (I - B^T B) n;
- the prior's step: x | z = the posterior of the noised mixture, drawn by DDPM's ancestral steps with the exact
  denoiser (the mixture's noise prediction) from the level abar = 1 / (1 + rho^2) where x_t = sqrt(abar) z, in
  ``--steps`` steps evenly spaced in log-SNR down to SNR 1e4;
with rho annealed geometrically from ``--rho-max`` to ``--rho-min`` over ``--sweeps`` sweeps. At a fixed rho the x
chain's stationary law is the prior tilted by N(B x; c, rho^2): the exact posterior as rho -> 0, if it mixes. A
generation costs sweeps x steps denoiser evaluations (no backward); 40 x 10 = 400, as ``gmm/guided``.

Run: python benchmarks/split_gibbs.py --out runs/split_gibbs [--sweeps 40 --steps 10 --threads 1]
Writes OUT/split_gibbs.md (the table in posterior.md's measures, the Goal 1 lines without SW, the command) and
OUT/split_gibbs.json (``benchmarks/probe.py``).
"""
from __future__ import annotations

import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import posterior  # noqa: E402
import probe  # noqa: E402


def levels(first_log_snr: float, steps: int) -> torch.Tensor:
    """``steps`` values of abar evenly spaced in log-SNR, from ``first_log_snr`` up to SNR 1e4 (near clean)."""
    return torch.sigmoid(torch.linspace(first_log_snr, math.log(1e4), steps)).double()


def clean_estimate(world, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """x0 from x at level abar ``a`` by the mixture's exact noise prediction."""
    return (x - (1 - a).sqrt() * world.noise_prediction(x, a)) / a.sqrt()


def ancestral(x: torch.Tensor, x0: torch.Tensor, a: torch.Tensor, prev: torch.Tensor, noise: torch.Tensor):
    """DDPM's ancestral step from x at level ``a`` to the cleaner level ``prev`` with clean estimate x0."""
    alpha = a / prev  # the step's alpha_t; its beta = 1 - alpha
    mean = (prev.sqrt() * (1 - alpha) / (1 - a)) * x0 + (alpha.sqrt() * (1 - prev) / (1 - a)) * x
    var = (1 - alpha) * (1 - prev) / (1 - a)
    return mean + var.sqrt() * noise


def project(x: torch.Tensor, basis: torch.Tensor, coords: torch.Tensor | float) -> torch.Tensor:
    """x [R, D] moved onto the affine set B x = c (rows of coords [R, n]; 0: onto the null space)."""
    return x - (x @ basis.T - coords) @ basis


def denoise_from(world, z: torch.Tensor, rho: float, steps: int, gen: torch.Generator) -> torch.Tensor:
    """One draw of x | z = x + rho n per row: DDPM ancestral steps with the mixture's exact noise prediction."""
    start = 1 / (1 + rho ** 2)
    abar = levels(math.log(start / (1 - start)), steps)
    x = math.sqrt(start) * z
    for j, a in enumerate(abar):
        x0 = clean_estimate(world, x, a)
        if j == steps - 1:
            return x0
        x = ancestral(x, x0, a, abar[j + 1], torch.randn(x.shape, generator=gen, dtype=torch.float64))
    return x


def split_gibbs(world, basis: torch.Tensor, coords: torch.Tensor, x: torch.Tensor, rhos: list[float], steps: int,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sweeps from x [R, D] (coords [R, n], one row per generation): the last (x, z)."""
    for rho in rhos:
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        z = project(x, basis, coords) + rho * project(noise, basis, 0)
        x = denoise_from(world, z, rho, steps, gen)
    return x, z


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = probe.parser(__doc__, "runs/split_gibbs")
    p.set_defaults(features=",".join(posterior.FEATURES))
    p.add_argument("--sweeps", type=int, default=40)
    p.add_argument("--steps", type=int, default=10, help="DDPM steps of each prior step")
    p.add_argument("--rho-max", type=float, default=10.0)
    p.add_argument("--rho-min", type=float, default=0.02)
    a = p.parse_args(argv)
    rhos = torch.logspace(math.log10(a.rho_max), math.log10(a.rho_min), a.sweeps).tolist()
    return probe.run(a, argv, "split_gibbs",  # every generation starts from a prior draw
                     lambda world, basis, coords, rows, gen: split_gibbs(world, basis, coords, world.sample(rows, gen),
                                                                         rhos, a.steps, gen)[0],
                     "Split Gibbs", f"{a.sweeps} sweeps x {a.steps} DDPM steps = {a.sweeps * a.steps} denoiser "
                     f"evaluations per generation, rho {a.rho_max:g} -> {a.rho_min:g}.")


if __name__ == "__main__":
    sys.exit(main())
