"""Where a variant loses against a reference run, image by image (issue 22): the per-image cosine differences
(mean, median, the images that lose most), and the variant's mean and worst cosine if its k images that lose most
took the reference's cosine instead: an oracle rescue, the best any scheme that reruns k hard images at the
reference's cost could do.

    python benchmarks/per_image_gap.py runs/ttq26/pixel_resnet-preset runs/ttq26/pixel_resnet-nab_8-2-8 [--k 0,3,8,16]

Reads each folder's ``metrics.jsonl`` (sample 0 of each target, as ``time_to_quality.py`` runs: one generation each).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from lit_featinv.runs import RunFolder


def cosines(folder: Path) -> dict[str, float]:
    """Target id -> cosine of its first generation."""
    run = RunFolder(folder)
    if not run.metrics.is_file():
        raise SystemExit(f"{run.metrics}: no such file (a run folder of time_to_quality.py?)")
    return {target: row["cosine"] for (target, sample), row in run.done().items() if sample == 0}


def gap(reference: dict[str, float], variant: dict[str, float], ks: list[int]) -> dict:
    """Per-image differences (variant - reference) over the targets in both, and the oracle rescues."""
    ids = sorted(reference.keys() & variant.keys())
    if not ids:
        raise SystemExit("the two runs share no target")
    order = sorted(ids, key=lambda i: variant[i] - reference[i])
    diffs = [variant[i] - reference[i] for i in order]
    rescue = {}
    for k in ks:
        c = [reference[i] if n < k else variant[i] for n, i in enumerate(order)]
        rescue[k] = (statistics.mean(c), min(c))
    return {"images": len(ids), "mean": statistics.mean(diffs), "median": statistics.median(diffs),
            "losing_most": [(i, reference[i], variant[i]) for i in order[:5]], "rescue": rescue}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference")
    p.add_argument("variant")
    p.add_argument("--k", default="0,3,8,16", help="numbers of images rescued, comma-separated")
    a = p.parse_args()
    g = gap(cosines(a.reference), cosines(a.variant), [int(k) for k in a.k.split(",")])
    print(f"{g['images']} targets; cosine variant - reference: mean {g['mean']:+.4f}, median {g['median']:+.4f}")
    print("losing most: " + ", ".join(f"{i} {r:.4f} -> {v:.4f}" for i, r, v in g["losing_most"]))
    print("\n| images rescued (k) | share | cosine mean | worst |\n| --- | --- | --- | --- |")
    for k, (mean, worst) in g["rescue"].items():
        print(f"| {k} | {k / g['images']:.2f} | {mean:.4f} | {worst:.4f} |")


if __name__ == "__main__":
    main()
