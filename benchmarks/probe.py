"""Runs a probe sampler (a script's function, not a lit_featinv component) in the exact-posterior world: every feature
of ``benchmarks/posterior.py`` with its truth and measures, a table with its Goal 1 lines, the results as JSON.

A probe script adds its own arguments to :func:`parser` and hands :func:`run` its sampler,
``draw(world, basis, coords, rows, gen) -> x [rows, D]``: ``rows`` draws on the feature's affine set ``basis x =
coords`` (coords [rows, n], each target's repeated per generation).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import posterior  # noqa: E402


def parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The arguments every probe has: targets, generations, reference draws and features as posterior.py's."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", default=out)
    p.add_argument("--targets", type=int, default=16)
    p.add_argument("--generations", type=int, default=16)
    p.add_argument("--reference", type=int, default=512)
    p.add_argument("--features", default=",".join(posterior.FEATURES + posterior.HELD_OUT))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p


def write(out: str, name: str, lines: list[str], payload: dict) -> None:
    """OUT/NAME.md (the lines) and OUT/NAME.json (the payload); the table printed."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=1)
    print("\n".join(lines), flush=True)


def truths(a):
    """Per feature of ``a.features``: (world, feature, its :class:`posterior.Truth`) for ``a``'s targets, reference
    and generations, as every script of the exact-posterior world draws them."""
    torch.set_num_threads(a.threads)
    world = posterior.mixture()
    _, targets01 = posterior.load_targets(a.targets)
    t = (targets01 * 2 - 1).flatten(1).double()
    covariance = world.total_covariance()
    for feature, matrix in posterior.feature_matrices(world, a.features.split(","), a.seed).items():
        yield world, feature, posterior.truth(world, matrix, t, a.reference, a.generations, a.seed, covariance)


def drawn(world, known, a, draw) -> torch.Tensor:
    """A probe's ``a.generations`` draws per target on the feature's affine set, as saved [N, G, D]; seeded
    ``a.seed + 1``."""
    post, count = known.posterior, len(known.t)
    x = draw(world, post.basis, post.z.repeat_interleave(a.generations, 0), count * a.generations,
             torch.Generator().manual_seed(a.seed + 1))
    return posterior.as_saved(x).view(count, a.generations, -1)


def guided(run_folder: str, feature: str, a, script: str) -> torch.Tensor:
    """``gmm/guided``'s generations of ``feature`` from a ``benchmarks/posterior.py --out`` folder, as saved [N, G, D];
    stops (naming ``script``) if that run had other targets or generations than ``a``."""
    saved = torch.load(os.path.join(run_folder, "generations", f"{feature}-guided.pt"))
    if saved["settings"]["generations"] != a.generations or saved["settings"]["targets"] != a.targets:
        raise SystemExit(f"{script}: {run_folder} has {saved['settings']['targets']} targets x "
                         f"{saved['settings']['generations']} generations, not {a.targets} x {a.generations}")
    return posterior.as_saved(saved["x"]).view(a.targets, a.generations, -1)


def run(a, argv: list[str], name: str, draw, title: str, settings: str) -> int:
    """Draws ``a.generations`` per target with ``draw`` on each feature and writes OUT/NAME.md and OUT/NAME.json."""
    results, rows = {}, {}
    exact = f"exact x {a.generations}"
    for world, feature, known in truths(a):
        begun = time.perf_counter()
        x = drawn(world, known, a, draw)
        seconds = time.perf_counter() - begun
        rows[feature] = {"reference": known.measure(known.reference), exact: known.measure(known.exact),
                         name: known.measure(x)}
        results[feature] = rows[feature] | {"seconds_per_image": seconds / x.shape[0] / x.shape[1]}
        print(f"{name}: {feature} in {seconds:.0f} s", flush=True)
    lines = [f"# {title} in the exact-posterior world ({a.targets} targets x {a.generations} generations)", "",
             f"`python benchmarks/{name}.py {shlex.join(argv)}`, {time.strftime('%Y-%m-%d')}, "
             f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}. {settings} Measures as "
             f"benchmarks/posterior.py's; goal: benchmarks/posterior.py's Goal 1 without its SW part (this run has no "
             f"`guided` row: compare the SW with posterior.md's).", "",
             ("| feature | sampler | null spread | mean offset | residual (exact draws') | SW | SW / exact's | "
              "s / image |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for feature, r in results.items():
        for row in (exact, name):
            m = r[row]
            secs = f"{r['seconds_per_image']:.3f}" if row == name else "–"
            lines.append(f"| {feature} | {row} | {m['null_spread']:.3f} ({m['null_spread_min']:.2f}-"
                         f"{m['null_spread_max']:.2f}) | {m['mean_offset']:.3f} | {m['residual']:.4f} "
                         f"({r['reference']['residual']:.4f}) | {m['sw']:.4f} | {m['sw'] / r[exact]['sw']:.2f} | "
                         f"{secs} |")
    lines += [""] + [f"{feature}: {posterior.goal_line(r, a.generations)}" for feature, r in rows.items()]
    write(a.out, name, lines, {"results": results, "argv": argv})
    return 0
