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
Writes OUT/split_gibbs.md (the table in posterior.md's measures, the command) and OUT/split_gibbs.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import posterior  # noqa: E402


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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/split_gibbs")
    p.add_argument("--targets", type=int, default=16)
    p.add_argument("--generations", type=int, default=16)
    p.add_argument("--reference", type=int, default=512)
    p.add_argument("--features", default=",".join(posterior.FEATURES))
    p.add_argument("--sweeps", type=int, default=40)
    p.add_argument("--steps", type=int, default=10, help="DDPM steps of each prior step")
    p.add_argument("--rho-max", type=float, default=10.0)
    p.add_argument("--rho-min", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(a.threads)
    world = posterior.mixture()
    _, targets01 = posterior.load_targets(a.targets)
    t = (targets01 * 2 - 1).flatten(1).double()
    rhos = torch.logspace(math.log10(a.rho_max), math.log10(a.rho_min), a.sweeps).tolist()
    covariance, results = world.total_covariance(), {}
    for feature, matrix in posterior.feature_matrices(world, a.features.split(","), a.seed).items():
        known = posterior.truth(world, matrix, t, a.reference, a.generations, a.seed, covariance)  # posterior.py's
        post = known.posterior
        gen = torch.Generator().manual_seed(a.seed + 1)
        begun = time.perf_counter()
        x, _ = split_gibbs(world, post.basis, post.z.repeat_interleave(a.generations, 0),
                           world.sample(len(t) * a.generations, gen), rhos, a.steps, gen)
        seconds = time.perf_counter() - begun
        x = posterior.as_saved(x).view(len(t), a.generations, -1)
        results[feature] = {"exact": known.measure(known.exact), "split_gibbs": known.measure(x),
                            "reference_residual": known.measure(known.reference)["residual"],
                            "seconds_per_image": seconds / x.shape[0] / x.shape[1]}
        print(f"split_gibbs: {feature} in {seconds:.0f} s", flush=True)
    lines = [f"# Split Gibbs in the exact-posterior world ({a.targets} targets x {a.generations} generations)", "",
             f"`python benchmarks/split_gibbs.py {' '.join(sys.argv[1:] if argv is None else argv)}`, "
             f"{time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}. "
             f"{a.sweeps} sweeps x {a.steps} DDPM steps = {a.sweeps * a.steps} denoiser evaluations per generation, "
             f"rho {a.rho_max:g} -> {a.rho_min:g}. Measures as benchmarks/posterior.py's.", "",
             "| feature | sampler | null spread | mean offset | residual (exact draws') | SW | SW / exact's | s / image |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for feature, r in results.items():
        for name in ("exact", "split_gibbs"):
            m = r[name]
            lines.append(f"| {feature} | {name if name != 'exact' else f'exact x {a.generations}'} | "
                         f"{m['null_spread']:.3f} ({m['null_spread_min']:.2f}-{m['null_spread_max']:.2f}) | "
                         f"{m['mean_offset']:.3f} | {m['residual']:.4f} ({r['reference_residual']:.4f}) | "
                         f"{m['sw']:.4f} | {m['sw'] / r['exact']['sw']:.2f} | "
                         f"{r['seconds_per_image'] if name != 'exact' else float('nan'):.3f} |")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "split_gibbs.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(a.out, "split_gibbs.json"), "w") as f:
        json.dump({"results": results, "argv": sys.argv[1:] if argv is None else argv}, f, indent=1)
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
