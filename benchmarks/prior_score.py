"""Prior scores of real images: the reference that ``lit-featinv report --reference`` reads a run's ``prior_score``
against, for the zoo's pixel and latent priors, beside pure noise and noised real images.

For each prior it scores the 32 shipped Fashion-MNIST test images (``assets/fmnist-test32``), the same images with
Gaussian noise added (std 0.1 and 0.3 of the [0, 1] range, clipped, 8-bit) and uniform noise images, with the prior
score a run records (``model.init_args.prior_score``, its defaults unless ``--steps``/``--draws`` are given), and
writes per prior a reference file (``OUT/PRIOR.json``) and a table of the distributions (``OUT/prior_score.md``).

Run: python benchmarks/prior_score.py [--out runs/prior_score] [--steps 10] [--draws 1]   (about 2 min on 2 CPU cores)
     [--runs NAME=RUN_DIR ...]   (rows for generations: the prior_score of each run's metrics.jsonl, as it recorded
                                  them; a run is shown under the prior its config names)
Then: lit-featinv report RUN_DIR --reference runs/prior_score/fmnist-ddpm.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lit_featinv import ASSETS, FeatureInversion
from lit_featinv.app import choose
from lit_featinv.runs import load_image

PRIORS = {"fmnist-ddpm": "fmnist/pixel_resnet", "fmnist-ldm": "fmnist/latent_resnet"}  # prior: a preset using it
FORMAT = "lit_featinv.prior_score_reference/1"  # lit_featinv.analysis.trust reads it


def image_sets(images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Real images [N, C, H, W] in [0, 1] -> uint8 sets as saved: the real ones, noised ones, pure noise."""
    gen = torch.Generator().manual_seed(seed)

    def saved(x):
        return x.clamp(0, 1).mul(255).round().to(torch.uint8)
    return {"real test images": saved(images),
            "+ noise std 0.1": saved(images + 0.1 * torch.randn(images.shape, generator=gen)),
            "+ noise std 0.3": saved(images + 0.3 * torch.randn(images.shape, generator=gen)),
            "uniform noise": saved(torch.rand(images.shape, generator=gen))}


def summary(scores: np.ndarray, threshold: float) -> dict:
    p5, p50, p95 = np.percentile(scores, [5, 50, 95])
    return {"n": len(scores), "mean": scores.mean(), "min": scores.min(), "p5": p5, "median": p50, "p95": p95,
            "max": scores.max(), "above": float(np.mean(scores > threshold))}


def run_scores(folder: str) -> tuple[str, np.ndarray]:
    """A run folder's prior (the ``pretrained`` its config names) and its generations' recorded prior scores."""
    import yaml
    config = yaml.safe_load((Path(folder) / "config.yaml").read_text())
    pretrained = config["model"]["init_args"]["prior"]["init_args"]["pretrained"]
    lines = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return pretrained, np.array([line["prior_score"] for line in lines if line.get("prior_score") is not None])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/prior_score")
    p.add_argument("--images", default=str(ASSETS / "fmnist-test32"))
    p.add_argument("--steps", type=int, help="PriorScore steps (default: its default)")
    p.add_argument("--draws", type=int, help="PriorScore draws (default: its default)")
    p.add_argument("--runs", nargs="*", default=[], metavar="NAME=RUN_DIR",
                   help="run folders whose generations' prior scores (metrics.jsonl) are shown beside the real images")
    a = p.parse_args()
    generations = {name: run_scores(folder) for name, folder in (item.split("=", 1) for item in a.runs)}
    threads, why = choose("auto")  # as lit-featinv predict does: the cores no other process keeps busy
    print(f"prior_score: {threads} CPU thread(s) ({why})", flush=True)
    files = sorted(Path(a.images).glob("*.png"))
    real = torch.stack([load_image(str(f)) for f in files])
    options = {k: v for k, v in (("steps", a.steps), ("draws", a.draws)) if v is not None}
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for name, preset in PRIORS.items():
        score = {"class_path": "lit_featinv.method.trust.PriorScore", "init_args": options}
        decoder = FeatureInversion.from_config(preset, prior_score=score, progress=False)
        scorer, prior = decoder.prior_score, decoder.prior
        settings = {"steps": scorer.steps, "draws": scorer.draws, "seed": scorer.seed}
        results = {}
        for kind, saved in image_sets(real).items():
            start = time.perf_counter()
            results[kind] = (scorer(prior, saved).numpy(), (time.perf_counter() - start) / len(saved))
        reference = results["real test images"][0]
        threshold = float(np.percentile(reference, 95))
        with open(os.path.join(a.out, f"{name}.json"), "w") as f:
            json.dump({"format": FORMAT, "images": str(a.images), "command": "python benchmarks/prior_score.py "
                       + " ".join(sys.argv[1:]),
                       "prior": {"class_path": f"lit_featinv.{type(prior).__name__}",
                                 "init_args": {"pretrained": prior.pretrained}},
                       "prior_score": {"class_path": score["class_path"], "init_args": settings},
                       "scores": [round(float(s), 6) for s in reference]}, f, indent=1)
        for label, (pretrained, scores) in generations.items():
            if Path(pretrained).name == name and len(scores):
                results[f"generations: {label}"] = (scores, float("nan"))
        for kind, (scores, seconds) in results.items():
            rows.append({"prior": f"{name} ({type(prior).__name__})", "images": kind,
                         "forwards": scorer.steps * scorer.draws, "seconds": seconds, **summary(scores, threshold)})
            print(json.dumps(rows[-1], default=float), flush=True)
    head = ("| prior | images | n | mean | min | p5 | median | p95 | max | above the real images' p95 | "
            "denoiser forwards / image | s / image |")
    lines = [head, "|" + " --- |" * 12] + [
        f"| {r['prior']} | {r['images']} | {r['n']} | {r['mean']:.4f} | {r['min']:.4f} | {r['p5']:.4f} | "
        f"{r['median']:.4f} | {r['p95']:.4f} | {r['max']:.4f} | {100 * r['above']:.0f}% | {r['forwards']} | "
        + ("–" if r['seconds'] != r['seconds'] else f"{r['seconds']:.3f}") + " |" for r in rows]
    table = "\n".join(lines)
    with open(os.path.join(a.out, "prior_score.md"), "w") as f:
        f.write(f"Command: python benchmarks/prior_score.py {' '.join(sys.argv[1:])} ({threads} CPU thread(s): "
                f"{why})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
