"""Which mixture component the generations fall in, in the exact-posterior world (issue 35, goal 1: what the
samplers get wrong where none meets it).

Every image is given the component of the mixture most likely to have made it (the argmax over k of log w_k + log
N_k(x)). Per target: the total variation distance between the generations' histogram over components and the
reference draws' (0: the same shares, 1: disjoint), the share of generations in the reference's most frequent
component (beside the reference's own), and, for the generations in that component, their SW to the reference beside
the SW of as many exact draws of that component (targets with at least 8 such generations): what is left once the
component is right. Samplers: ``guided`` from the saved generations of a ``benchmarks/posterior.py`` run with the
same targets, generations and reference (``--guided-run``); ``null_space`` and ``langevin``, the two probes at their
scripts' defaults, drawn here with those scripts' seeds.

Run: python benchmarks/components.py --out runs/components --guided-run runs/posterior_g64 [--features left_half,blur]
Writes OUT/components.md (the table, the command) and OUT/components.json.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import langevin  # noqa: E402
import null_space  # noqa: E402
import posterior  # noqa: E402
import probe  # noqa: E402


def components(world, x: torch.Tensor) -> torch.Tensor:
    """The most likely component [N, G] of each image of x [N, G, D]."""
    log_n, _, _ = world.noised(x.reshape(-1, x.shape[-1]), 1.0)
    return (log_n + world.weights.log()).argmax(1).view(x.shape[:2])


def shares(k: torch.Tensor, count: int) -> torch.Tensor:
    """Per target, the share of its images in each component [N, count]."""
    return torch.stack([torch.bincount(row, minlength=count).double() / len(row) for row in k])


def judge(world, x: torch.Tensor, known, k_reference: torch.Tensor, k_exact: torch.Tensor) -> dict:
    """The component measures of generations x [N, G, D] against the reference's components."""
    import ot
    count = len(world.weights)
    reference, k = shares(k_reference, count), components(world, x)
    top = reference.argmax(1)
    tv = 0.5 * (shares(k, count) - reference).abs().sum(1)
    right, exact = [], []
    for n in range(len(x)):
        mine = x[n][k[n] == top[n]]
        theirs = known.exact[n][k_exact[n] == top[n]][: len(mine)]
        if len(mine) >= 8 and len(theirs) == len(mine):
            ref = known.reference[n].numpy()
            right.append(float(ot.sliced_wasserstein_distance(mine.numpy(), ref, n_projections=500, seed=n)))
            exact.append(float(ot.sliced_wasserstein_distance(theirs.numpy(), ref, n_projections=500, seed=n)))
    return {"tv": float(tv.mean()), "tv_max": float(tv.max()),
            "top_share": float((k == top[:, None]).double().mean()),
            "right_sw": sum(right) / len(right) if right else float("nan"),
            "right_sw_exact": sum(exact) / len(exact) if exact else float("nan"), "right_targets": len(right)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = probe.parser(__doc__, "runs/components")
    p.set_defaults(generations=64, reference=4096, features="left_half,top_half,blur,pool4")
    p.add_argument("--guided-run", default=None, help="a benchmarks/posterior.py --out folder with guided's generations")
    a = p.parse_args(argv)
    results = {}
    probes = {module.__name__: module.sampler(module.arguments(argparse.ArgumentParser()).parse_args([]))
              for module in (null_space, langevin)}  # each at its script's defaults
    for world, feature, known in probe.truths(a):
        made = {f"exact x {a.generations}": known.exact}
        if a.guided_run:
            made["guided"] = probe.guided(a.guided_run, feature, a, "components")
        made |= {name: probe.drawn(world, known, a, draw) for name, draw in probes.items()}
        k_reference, k_exact = components(world, known.reference), components(world, known.exact)
        top = shares(k_reference, len(world.weights)).argmax(1)
        results[feature] = {"posterior_top_weight": float(known.posterior.weights.max(1).values.mean()),
                            "reference_top_share": float((k_reference == top[:, None]).double().mean())}
        for name, x in made.items():
            x = posterior.as_saved(x).view(known.t.shape[0], a.generations, -1)
            results[feature][name] = judge(world, x, known, k_reference, k_exact)
        print(f"components: {feature} done", flush=True)
    lines = [f"# Which mixture component the generations fall in ({a.targets} targets x {a.generations} generations, "
             f"{a.reference} exact draws)", "",
             f"`python benchmarks/components.py {shlex.join(argv)}`, {time.strftime('%Y-%m-%d')}, "
             f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}.", "",
             "| feature | sampler | component TV (max) | share in the reference's top component | right-component "
             "SW | as many exact draws' | targets |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for feature, r in results.items():
        lines.append(f"| {feature} | reference ({a.reference}) | – | {r['reference_top_share']:.3f} (posterior's "
                     f"weight {r['posterior_top_weight']:.3f}) | – | – | – |")
        for name, m in r.items():
            if isinstance(m, dict):
                lines.append(f"| {feature} | {name} | {m['tv']:.3f} ({m['tv_max']:.2f}) | {m['top_share']:.3f} | "
                             f"{m['right_sw']:.4f} | {m['right_sw_exact']:.4f} | {m['right_targets']} |")
    probe.write(a.out, "components", lines, {"results": results, "argv": argv})
    return 0


if __name__ == "__main__":
    sys.exit(main())
