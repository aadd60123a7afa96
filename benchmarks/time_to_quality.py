"""Time to quality on the Fashion-MNIST zoo (issues 9 and 22): variants against today's fast presets, one after
another in the same process, on the first N test images (one generation each), with naturalness beside the match.

    python benchmarks/time_to_quality.py --count 64 --out runs/ttq [--cases pixel_resnet] [--variants preset,clean]
        [--variant 'NAME=CLI OVERRIDES' ...] [--threads 2]

Per (case, variant): UNet forward and backward evaluations per image (the means of ``nfe`` and ``unet_backward`` in
metrics.jsonl: lower where generations stop early; no backward with the clean-estimate gradient),
seconds per image (wall time of the run / images), cosine mean and worst and the other classifier's agreement
(``benchmarks/quality.py``), and naturalness (``benchmarks/naturalness.py``): the prior score's median and worst
decile, and the KID of zoo-ViT features to real test images; a first row per case gives the same for the real
target images themselves. Writes ``results.md`` and ``time_to_quality.png`` (mean and worst cosine against seconds
per image, one point per variant) to ``--out``. ``--anchor N`` adds the authors' settings
(``configs/fmnist/paper_settings.yaml``) on the first N images as the quality anchor.
Needs: apt-get install dataset-fashion-mnist
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist import export  # noqa: E402
from naturalness import naturalness, of_images  # noqa: E402
from quality import CASES, summarise  # noqa: E402

from lit_featinv.app import run  # noqa: E402

TINY_DECODER = "assets/zoo/fmnist-ldm/tiny-decoder"


def variant(name: str) -> tuple[list[str], int]:
    """A variant by name: ``preset`` or ``clean`` (the clean-estimate gradient), then optional ``_K4`` (recurrence),
    ``_w1.2`` (guidance scale), ``_stop0.99`` (stop_cosine), ``_tiny`` (the gradient through the zoo's tiny
    decoder, ``assets/zoo/fmnist-ldm/tiny-decoder``: latent priors); e.g. ``clean_K4_w1.2_stop0.99_tiny``. Returns
    the CLI arguments on top of the case's preset."""
    kind, *options = name.split("_")
    if kind not in ("preset", "clean"):
        raise SystemExit(f"--variants: {name!r} does not start with preset or clean")
    args = ["--model.init_args.guidance.class_path", "lit_featinv.CleanEstimateGradient"] if kind == "clean" else []
    keys = {"K": "--model.init_args.recurrence", "w": "--model.init_args.guidance.init_args.scale",
            "stop": "--model.init_args.stop_cosine"}
    for option in options:
        if option == "tiny":
            args += ["--model.init_args.guidance.init_args.decoder", TINY_DECODER]
            continue
        key = next((k for k in sorted(keys, key=len, reverse=True) if option.startswith(k)), None)
        if key is None:
            raise SystemExit(f"--variants: {option!r} in {name!r} is not K<n>, w<x>, stop<c> or tiny")
        args += [keys[key], option[len(key):]]
    return args


def measure(case: str, variant: str, extra: list[str], targets: str, out: str, batch_size: int,
            config: str | None = None, threads: int = os.cpu_count()) -> dict:
    preset, case_extra, classifier = CASES[case]
    config = config or preset
    folder = os.path.join(out, f"{case}-{variant}")
    start = time.perf_counter()
    run(["predict", "--config", config, "--data.init_args.images", targets, "--data.init_args.limit", "null",
         "--data.init_args.batch_size", str(batch_size), "--model.init_args.samples_per_target", "1",
         "--model.init_args.progress", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.default_root_dir", folder, "--writer.overwrite", "true", "--threads", str(threads), *case_extra,
         *extra])
    row = summarise(case, folder, classifier, time.perf_counter() - start)
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    mean = lambda key: sum(r[key] for r in lines) / len(lines)  # noqa: E731
    return row | {"variant": variant, "nfe": mean("nfe"), "backward": mean("unet_backward"), **naturalness(folder)}


def targets_row(case: str, targets: str) -> dict:
    """The real target images themselves: the naturalness a generation should reach (cosine 1 by definition)."""
    paths = sorted(os.path.join(targets, name) for name in os.listdir(targets))
    return {"case": case, "variant": "(the targets: real test images)", "images": len(paths),
            **of_images(CASES[case][0], paths)}


def plot(rows: list[dict], path: str, size: int = 640) -> None:
    """Mean (filled) and worst (hollow) cosine against seconds per image, one colour per variant (PIL, no matplotlib)."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    pad, xmax = 60, max(r["s_per_image"] for r in rows) * 1.1
    ymin = min(0.9, min(r["cos_worst"] for r in rows) - 0.01)
    x = lambda s: pad + (size - 2 * pad) * s / xmax  # noqa: E731
    y = lambda c: size - pad - (size - 2 * pad) * (c - ymin) / (1 - ymin)  # noqa: E731
    draw.line([(pad, pad), (pad, size - pad), (size - pad, size - pad)], fill="black")
    draw.text((size // 2 - 60, size - pad + 25), "seconds per image", fill="black")
    draw.text((5, pad - 20), "cosine (filled: mean, hollow: worst)", fill="black")
    for tick in range(5):
        c, s = ymin + (1 - ymin) * tick / 4, xmax * tick / 4
        draw.text((5, y(c) - 6), f"{c:.3f}", fill="black")
        draw.text((x(s) - 10, size - pad + 5), f"{s:.1f}", fill="black")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
    names = sorted({f"{r['case']}-{r['variant']}" for r in rows})
    for n, r in enumerate(rows):
        colour = colours[names.index(f"{r['case']}-{r['variant']}") % len(colours)]
        cx, cm, cw = x(r["s_per_image"]), y(r["cos_mean"]), y(r["cos_worst"])
        draw.ellipse([cx - 5, cm - 5, cx + 5, cm + 5], fill=colour)
        draw.ellipse([cx - 5, cw - 5, cx + 5, cw + 5], outline=colour, width=2)
        draw.text((size - pad - 230, size - pad - 14 * (len(rows) - n) - 10), f"{r['case']} {r['variant']}",
                  fill=colour)  # the legend bottom right, below the points
    img.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--out", default="runs/ttq")
    p.add_argument("--cases", default="pixel_resnet,pixel_vit,latent_resnet")
    p.add_argument("--variants", default="preset,clean,clean_K4_w1.2_stop0.99")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="a variant by its CLI overrides, e.g. 'sched=--model.init_args.recurrence {0: 8, 10: 1}'")
    p.add_argument("--anchor", type=int, default=0, help="the authors' settings on the first N images (0: none)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of every run (the same for all)")
    a = p.parse_args()
    targets = os.path.join(a.out, "targets")
    export(targets, a.count)
    rows = []
    header = ("| case | variant | images | UNet forward / image | UNet backward / image | s / image | time vs preset "
              "| cosine mean | cosine worst | other classifier agrees | prior score median | worst decile "
              "| KID x 1000 |")
    named = [(name, variant(name)) for name in a.variants.split(",") if name]
    named += [(spec.partition("=")[0], shlex.split(spec.partition("=")[2])) for spec in a.variant]
    for case in a.cases.split(","):
        rows.append(targets_row(case, targets))
        for name, extra in named:
            rows.append(measure(case, name, extra, targets, a.out, a.batch_size, threads=a.threads))
            print(json.dumps(rows[-1]), flush=True)
            write(a, rows, header)
    if a.anchor:
        anchor = os.path.join(a.out, "anchor-targets")
        export(anchor, a.anchor)
        rows.append(measure("pixel_resnet", "paper_settings", [], anchor, a.out, a.batch_size,
                            config="configs/fmnist/paper_settings.yaml", threads=a.threads))
        write(a, rows, header)


def write(a, rows: list[dict], header: str) -> None:
    preset = {r["case"]: r["s_per_image"] for r in rows if r["variant"] == "preset"}
    lines = [header, "|" + " --- |" * 13]
    for r in rows:
        natural = f"| {r['prior_score_median']:.4f} | {r['prior_score_p90']:.4f} | {r['kid']:.2f} |"
        if "nfe" not in r:  # the targets
            lines.append(f"| {r['case']} | {r['variant']} | {r['images']} | | | | | 1 | 1 | 100% {natural}")
            continue
        ratio = f"{r['s_per_image'] / preset[r['case']]:.2f}" if r["case"] in preset else "-"
        lines.append(f"| {r['case']} | {r['variant']} | {r['images']} | {r['nfe']:.0f} | {r['backward']:.0f} "
                     f"| {r['s_per_image']:.2f} | {ratio} | {r['cos_mean']:.4f} | {r['cos_worst']:.4f} "
                     f"| {100 * r['agreement']:.0f}% {natural}")
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(f"Command: python benchmarks/time_to_quality.py {shlex.join(sys.argv[1:])}\n\n" + "\n".join(lines)
                + "\n")
    plot([r for r in rows if "nfe" in r], os.path.join(a.out, "time_to_quality.png"))


if __name__ == "__main__":
    main()
