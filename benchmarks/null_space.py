"""Null-space projection probe in the exact-posterior world (issue 35, a fifth lever; not a lit_featinv component).

The sampler of DDNM (Wang et al. 2023, "Zero-shot image restoration using denoising diffusion null-space model") with
RePaint's time travel (Lugmayr et al. 2022), for a linear feature A x = y: at each step the clean estimate is moved
onto the feature's affine set, x0 <- x0 - B^T (B x0 - c) (B an orthonormal basis of A's row space, c the target's
coordinates there), so that only its null-space part comes from the prior; then DDPM's ancestral step with that
estimate; at each level ``--jumps`` times, going back up one step (fresh noise) between them, so the null space and
the constrained part can agree. The denoiser is the mixture's exact noise prediction; the levels are ``--steps``
values of abar evenly spaced in log-SNR from 1e-4 to 1e4. A generation costs steps x jumps denoiser evaluations (no
backward): 20 x 20 = 400, as ``gmm/guided`` (of 400 x 1, 50 x 8 and 20 x 20 on 4 targets, 20 x 20
was closest to the exact draws).

Run: python benchmarks/null_space.py --out runs/null_space [--steps 20 --jumps 20 --threads 2]
Writes OUT/null_space.md (the table in posterior.md's measures, the goal, the command) and OUT/null_space.json.
"""
from __future__ import annotations

import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import probe  # noqa: E402
from split_gibbs import ancestral, clean_estimate, levels, project  # noqa: E402


def null_space_sampler(world, basis: torch.Tensor, coords: torch.Tensor, rows: int, steps: int, jumps: int,
                       gen: torch.Generator) -> torch.Tensor:
    """Draws [rows, D]: DDNM's projected clean estimate in DDPM ancestral steps, ``jumps`` per level."""
    noise = lambda: torch.randn(rows, world.dim, generator=gen, dtype=torch.float64)  # noqa: E731
    abar = levels(math.log(1e-4), steps)  # from near pure noise
    x = noise()
    for j, a in enumerate(abar):
        for jump in range(jumps):
            x0 = project(clean_estimate(world, x, a), basis, coords)
            if j == steps - 1:
                return x0
            stepped = ancestral(x, x0, a, abar[j + 1], noise())
            alpha = a / abar[j + 1]  # back up to level a (RePaint's jump) but after the last
            x = alpha.sqrt() * stepped + (1 - alpha).sqrt() * noise() if jump < jumps - 1 else stepped
    return x


def arguments(p):
    """The probe's own arguments, added to parser ``p`` (returned)."""
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--jumps", type=int, default=20, help="ancestral steps per level (RePaint's time travel)")
    return p


def sampler(a):
    """The probe as ``draw(world, basis, coords, rows, gen)`` with the settings of ``a``."""
    return lambda world, basis, coords, rows, gen: null_space_sampler(world, basis, coords, rows, a.steps, a.jumps,
                                                                      gen)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = arguments(probe.parser(__doc__, "runs/null_space")).parse_args(argv)
    return probe.run(a, argv, "null_space", sampler(a), "Null-space projection",
                     f"{a.steps} levels x {a.jumps} jumps = {a.steps * a.jumps} denoiser evaluations per generation.")


if __name__ == "__main__":
    sys.exit(main())
