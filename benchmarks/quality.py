"""Quality benchmark on the Fashion-MNIST zoo: how closely generated images match their target features.

For each case it runs ``lit-featinv predict`` on the first N Fashion-MNIST test images, then reports,
on the images as saved (8-bit PNG), the cosine of f(x) to f* (final and best image), the relative L2,
the cost in UNet evaluations, and whether the *other* zoo classifier predicts the same class for the
generated image as for the target (no adversarial shortcut).

Run: python benchmarks/quality.py --count 64 --out runs/bench [--cases pixel_resnet,...] [--samples 1]
Needs: apt-get install dataset-fashion-mnist
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist import export  # noqa: E402

from lit_featinv import TimmExtractor  # noqa: E402
from lit_featinv.app import run  # noqa: E402
from lit_featinv.runs import load_image  # noqa: E402

ZOO = "assets/zoo"
RESNET, VIT = f"local-dir:{ZOO}/fmnist-resnet10t", f"local-dir:{ZOO}/fmnist-vit-tiny"
UNGUIDED = ["--model.init_args.guidance.init_args.scale", "0", "--model.init_args.recurrence", "1"]
# name: (config, extra CLI arguments, the other classifier for the agreement check)
CASES = {
    "pixel_resnet": ("configs/fmnist/pixel_resnet.yaml", [], VIT),
    "pixel_resnet_unguided": ("configs/fmnist/pixel_resnet.yaml", UNGUIDED, VIT),
    "pixel_vit": ("configs/fmnist/pixel_vit.yaml", [], RESNET),
    "pixel_vit_unguided": ("configs/fmnist/pixel_vit.yaml", UNGUIDED, RESNET),
    # the same pixel DDPM seen as a flow-matching model (lit_featinv.FlowMatchingView): the flow code path
    "pixel_resnet_flow_view": ("configs/fmnist/pixel_resnet.yaml",
                               ["--model.init_args.prior.class_path", "lit_featinv.FlowMatchingView"], VIT),
    "latent_resnet": ("configs/fmnist/latent_resnet.yaml", [], VIT),
    "latent_resnet_unguided": ("configs/fmnist/latent_resnet.yaml", UNGUIDED, VIT),
}


@torch.no_grad()
def agreement(rows: list[dict], folder: str, classifier: str) -> float:
    """Fraction of generated images that ``classifier`` puts in the class it gives their target."""
    ext = TimmExtractor(classifier)
    net = ext.network
    def predict(path):
        return int(net(ext.preprocess(load_image(path)[None])).argmax(1))
    return statistics.mean(predict(os.path.join(folder, r["image"])) == predict(r["target_image"]) for r in rows)


def summarise(name: str, folder: str, classifier: str, wall: float) -> dict:
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    cos, best = [r["cosine"] for r in rows], [r["best_cosine"] for r in rows]
    return {"case": name, "images": len(rows), "nfe": rows[0]["nfe"], "cos_mean": statistics.mean(cos),
            "cos_worst": min(cos), "best_cos_mean": statistics.mean(best), "best_cos_worst": min(best),
            "rel_l2_mean": statistics.mean(r["rel_l2"] for r in rows),
            "agreement": agreement(rows, folder, classifier), "s_per_image": wall / len(rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=64, help="first N Fashion-MNIST test images")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {list(CASES)}")
    p.add_argument("--samples", type=int, default=1, help="generations per target")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("extra", nargs="*", help="more CLI overrides for every case, e.g. --model.init_args.recurrence=8")
    a = p.parse_args()
    targets = os.path.join(a.out, "targets")
    export(targets, a.count)
    results = []
    for name in a.cases.split(","):
        config, extra, classifier = CASES[name]
        folder = os.path.join(a.out, name)
        start = time.perf_counter()
        run(["predict", "--config", config, "--data.init_args.images", targets, "--data.init_args.limit", "null",
             "--data.init_args.batch_size", str(a.batch_size), "--model.init_args.samples_per_target", str(a.samples),
             "--model.init_args.progress", "false", "--trainer.enable_progress_bar", "false",
             "--trainer.default_root_dir", folder, "--writer.output_dir", folder, *extra, *a.extra])
        results.append(summarise(name, folder, classifier, time.perf_counter() - start))
        print(json.dumps(results[-1]), flush=True)
    header = "| case | images | UNet evals / image | cosine mean | cosine worst | best-image cosine mean | worst | rel. L2 mean | other classifier agrees | s / image |"
    lines = [header, "|" + " --- |" * 10]
    for r in results:
        lines.append(f"| {r['case']} | {r['images']} | {r['nfe']} | {r['cos_mean']:.3f} | {r['cos_worst']:.3f} | "
                     f"{r['best_cos_mean']:.3f} | {r['best_cos_worst']:.3f} | {r['rel_l2_mean']:.3f} | "
                     f"{100 * r['agreement']:.0f}% | {r['s_per_image']:.1f} |")
    table = "\n".join(lines)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(f"Command: python benchmarks/quality.py {' '.join(sys.argv[1:])}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
