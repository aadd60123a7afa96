"""How much an intermediate step's loss says about which generation ends best (issue 35: why particles weighted on
it do not win the best generation). Reads a run folder whose targets have independent generations (the paper's
sampler: ``trajectories.jsonl``, ``metrics.jsonl``): at each step s, the generation with the lowest loss of the clean
estimate (iteration k = 0, what the particle sampler's potentials weigh) against the one whose saved image ends with
the highest cosine.

    python benchmarks/foresight.py runs/equal_compute64/preset [--steps 5,10,...]

Prints, per step: the targets where the lowest loss at s is the final best (chance: 1 / generations per target), and
the mean Spearman correlation over targets between the ranks at s (by loss) and at the end (by cosine).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics


def ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0] * len(values)
    for rank, i in enumerate(order):
        out[i] = rank
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two lists without ties (n >= 2)."""
    n, ra, rb = len(a), ranks(a), ranks(b)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1))


def read(folder: str) -> tuple[dict, dict]:
    """Per target, per generation: the k = 0 loss at each step, and the saved image's cosine."""
    losses, final = collections.defaultdict(dict), collections.defaultdict(dict)
    with open(os.path.join(folder, "trajectories.jsonl")) as f:
        for line in map(json.loads, f):
            losses[line["id"]][line["sample"]] = {s: v for s, k, v in zip(line["step"], line["k"], line["loss"])
                                                  if k == 0}
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        for line in map(json.loads, f):
            if line.get("cosine") is not None:
                final[line["id"]][line["sample"]] = line["cosine"]
    return losses, final


def foresight(losses: dict, final: dict, step: int) -> dict:
    """At ``step``: over the targets with >= 2 finished generations, how often the lowest loss ends best, and the
    mean rank correlation (loss, low first, against final cosine, high first)."""
    hits, rho, chance = [], [], []
    for target, ends in final.items():
        gens = [g for g in sorted(ends) if step in losses[target].get(g, {})]
        if len(gens) < 2:
            continue
        at = [losses[target][g][step] for g in gens]
        end = [ends[g] for g in gens]
        hits.append(min(range(len(gens)), key=at.__getitem__) == max(range(len(gens)), key=end.__getitem__))
        rho.append(spearman([-x for x in at], end))
        chance.append(1 / len(gens))
    return {"step": step, "targets": len(hits), "lowest_ends_best": sum(hits), "chance": sum(chance),
            "spearman": statistics.mean(rho)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--steps", default="5,10,15,20,25,30,35,40,45,49")
    a = p.parse_args()
    losses, final = read(a.folder)
    print("| step | targets | lowest loss ends best | by chance | Spearman (mean over targets) |")
    print("| --- | --- | --- | --- | --- |")
    for step in map(int, a.steps.split(",")):
        r = foresight(losses, final, step)
        print(f"| {r['step']} | {r['targets']} | {r['lowest_ends_best']} | {r['chance']:.0f} | {r['spearman']:+.2f} |")


if __name__ == "__main__":
    main()
