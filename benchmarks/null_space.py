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

import argparse
import json
import math
import os
import shlex
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import posterior  # noqa: E402
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/null_space")
    p.add_argument("--targets", type=int, default=16)
    p.add_argument("--generations", type=int, default=16)
    p.add_argument("--reference", type=int, default=512)
    p.add_argument("--features", default=",".join(posterior.FEATURES + posterior.HELD_OUT))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--jumps", type=int, default=20, help="ancestral steps per level (RePaint's time travel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    world = posterior.mixture()
    _, targets01 = posterior.load_targets(a.targets)
    t = (targets01 * 2 - 1).flatten(1).double()
    covariance, results, rows = world.total_covariance(), {}, {}
    for feature, matrix in posterior.feature_matrices(world, a.features.split(","), a.seed).items():
        known = posterior.truth(world, matrix, t, a.reference, a.generations, a.seed, covariance)  # posterior.py's
        gen = torch.Generator().manual_seed(a.seed + 1)
        begun = time.perf_counter()
        x = null_space_sampler(world, known.posterior.basis, known.posterior.z.repeat_interleave(a.generations, 0),
                               len(t) * a.generations, a.steps, a.jumps, gen)
        seconds = time.perf_counter() - begun
        x = posterior.as_saved(x).view(len(t), a.generations, -1)
        rows[feature] = {"reference": known.measure(known.reference),
                         f"exact x {a.generations}": known.measure(known.exact), "null_space": known.measure(x)}
        results[feature] = rows[feature] | {"seconds_per_image": seconds / x.shape[0] / x.shape[1]}
        print(f"null_space: {feature} in {seconds:.0f} s", flush=True)
    lines = [f"# Null-space projection in the exact-posterior world ({a.targets} targets x {a.generations} "
             f"generations)", "",
             f"`python benchmarks/null_space.py {shlex.join(argv)}`, {time.strftime('%Y-%m-%d')}, "
             f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}. {a.steps} levels x {a.jumps} "
             f"jumps = {a.steps * a.jumps} denoiser evaluations per generation. Measures as benchmarks/posterior.py's; "
             f"goal: benchmarks/posterior.py's Goal 1 without its SW part (this run has no `guided` row: compare the "
             f"SW with posterior.md's).", "",
             ("| feature | sampler | null spread | mean offset | residual (exact draws') | SW | SW / exact's | "
              "s / image |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for feature, r in results.items():
        floor = r[f"exact x {a.generations}"]["sw"]
        for name in (f"exact x {a.generations}", "null_space"):
            m = r[name]
            secs = f"{r['seconds_per_image']:.3f}" if name == "null_space" else "–"
            lines.append(f"| {feature} | {name} | {m['null_spread']:.3f} ({m['null_spread_min']:.2f}-"
                         f"{m['null_spread_max']:.2f}) | {m['mean_offset']:.3f} | {m['residual']:.4f} "
                         f"({r['reference']['residual']:.4f}) | {m['sw']:.4f} | {m['sw'] / floor:.2f} | {secs} |")
    lines += [""] + [f"{feature}: {posterior.goal_line(r, a.generations)}" for feature, r in rows.items()]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "null_space.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(a.out, "null_space.json"), "w") as f:
        json.dump({"results": results, "argv": argv}, f, indent=1)
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
