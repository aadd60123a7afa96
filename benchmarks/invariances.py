"""Ground-truth invariance benchmark: does the inversion show what a feature does *not* encode?

Features with a known invariance, built from the zoo ResNet (``benchmarks/invariant_features.py``, loaded by
``lit_featinv.ModuleExtractor`` through ``class_path``): the network sees only the left half of the image; the
image standardised over its pixels; the image Gaussian-blurred; and the softmax over its 10 classes. Each is
inverted with the pixel prior and the quick start's sampler (``configs/quickstart.yaml``, the fastest zoo
pixel preset: DDIM 50, K = 4, w = 0.8, UNet gradient) on the same Fashion-MNIST targets and seeds as its
control, the plain network's pooled feature, and as the unguided prior (w = 0, K = 1) for reference. Then, over
the generations of each target: the variation of the factor the feature ignores should grow against the
control's (goal: at least 1.5 times), that of the factor it encodes should not (at most the control's).

The data reference (``benchmarks/data_reference.py``): how much a factor *should* vary, from the data posterior. For
each target and each feature (the control too), its k = 16 (--neighbours) nearest real images among the 60,000
Fashion-MNIST training images (--train; padded from 28 x 28 to 32 x 32 by 2 zero pixels as the zoo's images, in
[0, 1]) by that feature's own distance: the Euclidean distance between the float32 features the inversion matched,
of the same extractor (``ModuleExtractor`` from ``invariant_features.extractor_config``; the blurred feature with
--sigma); a training image identical in pixels to the target is excluded. The training features are computed once
per feature and cached in OUT/data/. Every factor is measured on the neighbours exactly as on the generations
(``measures``, their classes by both zoo classifiers); second goal: the generations' value within 0.67 to 1.5 times
the data neighbours' for the same feature. The table also gives the neighbours' cosine to the target in the
feature's space (mean, worst), which says how close to the target's feature the data comes.

Run: python benchmarks/invariances.py --out runs/invariances [--targets 16 --generations 8 --steps 50 --recurrence 4]
Writes OUT/invariances.md (the table), OUT/invariances.png (the figure), OUT/invariances-data.png (per feature: target
| its first 8 generations | its 8 nearest data neighbours), OUT/images/NAME.pt (the generations, reused by a rerun
with --reuse), OUT/data/FEATURE-KEY.pt (the training images' features), and run folders for ``lit-featinv report``:
OUT/runs/FEATURE/generations, OUT/runs/FEATURE/data (the data neighbours: a --reference-run), OUT/runs/unguided.
Needs: apt-get install dataset-fashion-mnist (the training images, --train).
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import re
import shlex
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import data_reference as data  # noqa: E402
import invariant_features as inv  # noqa: E402
from naturalness import scores_of  # noqa: E402
from run_folders import write_run  # noqa: E402

FEATURES = ["control", "left_half", "contrast_normalised", "blurred", "class_posterior"]
CONFIGS = FEATURES + ["unguided"]
LABELS = {"control": "control (plain pooled feature)", "left_half": "left half only",
          "contrast_normalised": "contrast normalised", "blurred": "blurred", "class_posterior": "class posterior",
          "unguided": "unguided prior"}
GOAL_IGNORED, GOAL_ENCODED = 1.5, 1.0
GOAL_DATA = (0.67, 1.5)  # generations / data neighbours: the second pass rule
GOAL_VIT = 0.8  # the class posterior's generations the other classifier puts in the target's class (--beside)


# ---- generating ---------------------------------------------------------------------------------------------------
def load_targets(folder: str, count: int) -> tuple[list[str], torch.Tensor]:
    from lit_featinv.runs import load_image
    paths = sorted(p for p in os.listdir(folder) if p.endswith(".png"))[:count]
    if len(paths) < count:
        raise SystemExit(f"invariances: {folder} has {len(paths)} images, --targets asks for {count}")
    return [os.path.splitext(p)[0] for p in paths], torch.stack([load_image(os.path.join(folder, p)) for p in paths])


SET_BY_DECODER = {"extractor", "samples_per_target", "num_inference_steps", "recurrence", "seed", "prior_score",
                  "progress", "guidance"}  # the model.init_args :func:`decoder` sets itself (not --overrides')


def decoder(name: str, a):
    """The quick start's sampler with feature ``name``'s extractor (``unguided``: the control's, w = 0, K = 1)."""
    from lit_featinv import FeatureInversion
    feature = "control" if name == "unguided" else name
    init = {"sigma": a.sigma} if name == "blurred" else None
    scale, recurrence = (0.0, 1) if name == "unguided" else (a.scale, a.recurrence)
    overrides = {k: v for k, v in a.overrides.items() if name != "unguided" or k != "sampler"}  # the prior alone
    return FeatureInversion.from_config(
        a.config, extractor=inv.extractor_config(feature, init), samples_per_target=a.generations,
        num_inference_steps=a.steps, recurrence=recurrence, seed=a.seed, prior_score=None, progress=False,
        guidance={"class_path": "lit_featinv.UNetGradient", "init_args": {"scale": scale, "clip_theta": 3.0}},
        **overrides)


def generate(name: str, targets: torch.Tensor, a) -> dict:
    """Generations [N, G, 1, H, W] in [0, 1] (as saved, 8-bit) of feature ``name``, with their cosines and time.
    Each batch of targets is saved as it finishes (OUT/images/NAME/), so a stopped run resumes at its next batch."""
    from lit_featinv.runs import collate, inversion, target_items
    path = os.path.join(a.out, "images", f"{name}.pt")
    if a.reuse and os.path.exists(path):
        saved = torch.load(path)
        if saved["images"].shape[:2] == (len(targets), a.generations) and saved.get("args") == run_args(a):
            print(f"invariances: {name}: reusing {path}", flush=True)
            return saved
    model, items = decoder(name, a), target_items(images=targets)  # ids image_00000...: the same seeds as one call
    parts = []
    for start in range(0, len(items), a.batch_targets):
        part = os.path.join(a.out, "images", name, f"targets-{start:04d}-{a.batch_targets}.pt")
        done = torch.load(part) if os.path.exists(part) else None
        if done is None or done.get("args") != run_args(a) or done.get("generations") != a.generations:
            begun = time.perf_counter()
            out = inversion(model.predict_step(collate(items[start: start + a.batch_targets])), "pt")  # NaN: failed
            done = {"images": out.images, "cosine": [m.get("cosine", math.nan) for m in out.metrics],
                    "nfe": out.metrics[0].get("nfe"), "seconds": time.perf_counter() - begun, "args": run_args(a),
                    "generations": a.generations,  # with model.sampler: each target's lowest ESS (a fraction)
                    "ess": [min(m["particles"]["ess"]) for m in out.metrics[::a.generations] if "particles" in m],
                    "particles": getattr(model.sampler, "particles", None)}
            os.makedirs(os.path.dirname(part), exist_ok=True)
            torch.save(done, part)
            print(f"invariances: {name}: targets {start + 1}-{start + len(out.images) // a.generations} of "
                  f"{len(items)} in {done['seconds']:.0f} s", flush=True)
        parts.append(done)
    images = torch.cat([p["images"] for p in parts]).reshape(len(targets), a.generations, *parts[0]["images"].shape[1:])
    cos = [c for p in parts for c in p["cosine"]]
    seconds = sum(p["seconds"] for p in parts)
    saved = {"images": images, "cosine": cos, "seconds": seconds, "nfe": parts[0]["nfe"], "args": run_args(a),
             "ess": [e for p in parts for e in p.get("ess", [])], "particles": parts[0].get("particles")}
    torch.save(saved, path)
    print(f"invariances: {name}: {images.shape[0]} targets x {images.shape[1]} generations in {seconds:.0f} s, "
          f"cosine to target mean {sum(cos) / len(cos):.3f}, worst {min(cos):.3f}", flush=True)
    return saved


def run_args(a) -> dict:
    args = {k: getattr(a, k) for k in ("config", "steps", "recurrence", "scale", "seed", "sigma", "images")}
    return args | ({"overrides": a.overrides} if a.overrides else {})  # without: as runs saved before the option


# ---- measuring ----------------------------------------------------------------------------------------------------
def across(x: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Std across generations (dim 1) of x [N, G, ...], averaged over the rest (``mask``: over those pixels only)
    and over targets."""
    s = x.std(1)
    if mask is not None:
        s = s[..., mask]
    return float(s.mean())


def spread(v: torch.Tensor) -> float:
    """Std across generations of a per-image value v [N, G], averaged over targets."""
    return float(v.std(1).mean())


def pairwise(y: torch.Tensor) -> torch.Tensor:
    """Per target, the mean RMS pixel distance between two of its generations: y [N, G, ...] -> [N]."""
    flat = y.flatten(2)
    d = torch.cdist(flat, flat) / math.sqrt(flat.shape[-1])
    g = flat.shape[1]
    return d.sum((1, 2)) / (g * (g - 1))


@functools.lru_cache(maxsize=None)
def zoo_classifier(classifier: str):
    from lit_featinv import TimmExtractor
    return TimmExtractor(f"local-dir:{os.path.join(ROOT, 'assets', 'zoo', 'fmnist-' + classifier)}")


@torch.no_grad()
def classes(images: torch.Tensor, classifier: str) -> torch.Tensor:
    """Top-1 class of images [..., 1, H, W] by a zoo classifier (``resnet10t`` or ``vit-tiny``)."""
    ext = zoo_classifier(classifier)
    flat = images.flatten(0, -4)
    return ext.network(ext.preprocess(flat)).argmax(1).reshape(images.shape[:-3])


def standardise(y: torch.Tensor) -> torch.Tensor:
    mean, std = y.mean((-2, -1), keepdim=True), y.std((-2, -1), keepdim=True, unbiased=False)
    return (y - mean) / (std + 1e-4)


def measures(y: torch.Tensor, target: torch.Tensor, sigma: float, unguided_by_class: dict, labels: dict) -> dict:
    """Every factor's variation over the generations y [N, G, 1, H, W] of targets [N, 1, H, W]."""
    w = y.shape[-1]
    left = torch.zeros(y.shape[-2], w, dtype=torch.bool)
    left[:, : w // 2] = True
    coarse = inv.blur(y.flatten(0, 1), sigma).reshape(y.shape)
    fine = y - coarse
    res, vit = labels["resnet"], labels["vit"]
    pair = pairwise(y)
    same_class = torch.tensor([unguided_by_class.get(int(c), math.nan) for c in labels["target_resnet"]])
    keep = ~same_class.isnan()
    return {
        "right_std": across(y[:, :, 0], ~left), "left_std": across(y[:, :, 0], left),
        "left_rmse": float(((y[:, :, 0][..., left] - target[:, None, 0][..., left]) ** 2).mean().sqrt()),
        "brightness": spread(y.mean((2, 3, 4))), "contrast": spread(y.std((3, 4), unbiased=False)[:, :, 0]),
        "shape_std": across(standardise(y)),
        "hf_energy": spread((fine ** 2).mean((2, 3, 4))), "texture_std": across(fine), "layout_std": across(coarse),
        "class_agree": float((res == labels["target_resnet"][:, None]).float().mean()),
        "vit_agree": float((vit == labels["target_vit"][:, None]).float().mean()),
        "pairwise": float(pair.mean()),
        "pairwise_vs_unguided_class": float((pair[keep] / same_class[keep]).mean()) if keep.any() else math.nan,
        "prior_score_median": float(labels["prior_score"].quantile(0.5)),
    }


def labels_of(images: torch.Tensor, target_resnet: torch.Tensor, target_vit: torch.Tensor, config: str) -> dict:
    """Classes of images [N, G, 1, H, W] and of their targets by both zoo classifiers, and the images' prior scores
    with ``config``'s prior, as ``measures`` takes them."""
    return {"resnet": classes(images, "resnet10t"), "vit": classes(images, "vit-tiny"), "target_resnet": target_resnet,
            "target_vit": target_vit, "prior_score": torch.tensor(scores_of(config, images.flatten(0, 1)))}


def unguided_class_distances(y: torch.Tensor, labels: torch.Tensor) -> dict:
    """Mean RMS distance between two unguided samples that the ResNet puts in the same class, per class."""
    flat, lab = y.flatten(0, 1), labels.flatten()
    out = {}
    for c in lab.unique().tolist():
        members = flat[lab == c]
        if len(members) >= 2:
            out[int(c)] = float(pairwise(members[None])[0])
    return out


# (feature, factor, role, measure key, what): the rows of the table; role "ignored" should grow >= 1.5x the
# control's, "encoded" should stay <= the control's
ROWS = [
    ("left_half", "right half", "ignored", "right_std", "pixel std across generations, right half"),
    ("left_half", "left half", "encoded", "left_std", "pixel std across generations, left half"),
    ("contrast_normalised", "brightness", "ignored", "brightness", "std across generations of the image's mean"),
    ("contrast_normalised", "contrast", "ignored", "contrast", "std across generations of the image's pixel std"),
    ("contrast_normalised", "shape", "encoded", "shape_std", "pixel std across generations of the standardised image"),
    ("blurred", "fine texture", "ignored", "texture_std", "pixel std across generations of x - blur(x)"),
    ("blurred", "fine texture", "ignored", "hf_energy", "std across generations of mean (x - blur(x))^2"),
    ("blurred", "coarse layout", "encoded", "layout_std", "pixel std across generations of blur(x)"),
    ("class_posterior", "everything but the class", "ignored", "pairwise",
     "mean RMS distance between two generations"),
    ("class_posterior", "class", "encoded", "class_disagree",
     "generations the ResNet puts in another class than the target"),
]


def judge(role: str, value: float, control: float) -> tuple[float, bool]:
    ratio = value / control if control > 0 else (math.inf if value > 0 else 1.0)
    return ratio, (ratio >= GOAL_IGNORED if role == "ignored" else value <= control)


def judge_data(value: float, reference: float) -> tuple[float, bool]:
    """Ratio generations / data neighbours, and whether it is within :data:`GOAL_DATA`."""
    ratio = value / reference if reference > 0 else (math.inf if value > 0 else 1.0)
    return ratio, GOAL_DATA[0] <= ratio <= GOAL_DATA[1]


# ---- writing ------------------------------------------------------------------------------------------------------
def table(results: dict, runs: dict, a, reference: dict, data_results: dict, real_p95: float) -> str:
    """The whole report: runs, data neighbours, the factor table with both pass rules, more measures, every number."""
    m, d = with_disagree(results), with_disagree(data_results)
    lines = run_lines(runs, a) + data_lines(reference, runs, a) + row_lines(m, d) + extra_lines(m, d, real_p95)
    if a.beside:
        lines += beside_lines(m, d, a.beside, real_p95)
    lines += ["", "All measures, every run:", "", "```json", json.dumps(results, indent=1), "```", "",
              "All measures, the data neighbours of every feature:", "", "```json", json.dumps(data_results, indent=1),
              "```", ""]
    return "\n".join(lines)


def with_disagree(results: dict) -> dict:
    """Measures per run with the share of another class than the target's (the class row's measure)."""
    return {name: dict(r, class_disagree=1 - r["class_agree"]) for name, r in results.items()}


def beside_lines(m: dict, d: dict, path: str, real_p95: float) -> list[str]:
    """The posterior goal (issue 35's second) for these measures (m, d) beside another sampler's results file
    ``path`` (this benchmark's, on the same targets: its two JSON blocks): each ignored factor's generations / data
    within :data:`GOAL_DATA`, no encoded factor above the data's, and the class posterior's generations natural."""
    blocks = re.findall(r"```json\n(.*?)\n```", open(path).read(), re.S)
    if len(blocks) < 2:
        raise SystemExit(f"invariances: --beside {path} has not the measures of a results file of this benchmark "
                         f"(two JSON blocks)")
    other, other_data = (with_disagree(json.loads(b)) for b in blocks[:2])
    low, high = GOAL_DATA

    def verdict(role: str, value: float, ref: float) -> tuple[float, bool]:
        ratio, within = judge_data(value, ref)
        return ratio, within if role == "ignored" else ratio <= GOAL_ENCODED

    lines = ["", (f"The posterior goal, this run beside `{os.path.relpath(path, ROOT)}` (the same targets, seeds and "
                  f"data neighbours): each ignored factor's generations / data within [{low}, {high}], no encoded "
                  f"factor above the data's (<= {GOAL_ENCODED}), the class posterior's prior score median within the "
                  f"real images' p95 ({real_p95:.4f}) and the ViT agreeing on >= {GOAL_VIT:.0%}."), "",
             "| feature | factor | role | goal | this run: generations / data | pass | beside | pass |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    runs = {"this": (m, d), "beside": (other, other_data)}
    met = {run: [] for run in runs}

    def row(feature: str, factor: str, role: str, goal: str, judged, spec: str) -> str:
        """A table row: ``judged(measures, data measures)`` -> (value, pass) for each run, the value as ``spec``."""
        cells = []
        for run, (mm, dd) in runs.items():
            value, ok = judged(mm, dd)
            met[run].append(ok)
            cells.append(f"{value:{spec}} | {yes(ok)}")
        return f"| {LABELS[feature]} | {factor} | {role} | {goal} | {' | '.join(cells)} |"

    for feature, factor, role, key, _ in ROWS:
        goal = f"[{low}, {high}]" if role == "ignored" else f"<= {GOAL_ENCODED}"
        lines.append(row(feature, factor, role, goal,
                         lambda mm, dd: verdict(role, mm[feature][key], dd[feature][key]), ".3f"))
    natural = [("vit_agree", f">= {GOAL_VIT}", lambda v: v >= GOAL_VIT, "the ViT agrees"),
               ("prior_score_median", f"<= {real_p95:.4f}", lambda v: v <= real_p95, "prior score median")]
    for key, goal, ok_of, what in natural:
        lines.append(row("class_posterior", what, "natural", goal,
                         lambda mm, dd: (mm["class_posterior"][key], ok_of(mm["class_posterior"][key])), ".4f"))
    return lines + ["", f"Every row: this run {yes(all(met['this']))}, beside {yes(all(met['beside']))}."]


def run_lines(runs: dict, a) -> list[str]:
    """Title, command and sampler, and each run's cost and match."""
    from lit_featinv.method import collapsed
    minutes = sum(r["seconds"] for r in runs.values()) / 60  # the runs' own generation time, resumed ones included
    lines = [
        f"# Ground-truth invariances ({a.targets} targets x {a.generations} generations)", "",
        (f"`python benchmarks/invariances.py {shlex.join(a.argv)}`: {minutes:.1f} min of generation, "
         f"{torch.get_num_threads()} torch thread(s). Sampler: `{a.config}` with DDIM {a.steps} steps, K = {a.recurrence}, "
         f"w = {a.scale}, UNet gradient{overrides_text(a)}; unguided: w = 0, K = 1; blur sigma {a.sigma} px; the first "
         f"{a.targets} images of `{os.path.relpath(a.images, ROOT)}`, the same seeds for every feature."), "",
        "| run | UNet evals / image | s / image | cosine to target: mean | worst |", "| --- | --- | --- | --- | --- |"]
    for name in CONFIGS:
        r = runs[name]
        cos = r["cosine"]
        lines.append(f"| {LABELS[name]} | {r['nfe']} | {r['seconds'] / len(cos):.2f} | {sum(cos) / len(cos):.3f} | "
                     f"{min(cos):.3f} |")
    particles = {n: r for n, r in runs.items() if r.get("ess")}
    if particles:
        lines += ["", "Particles (model.sampler), per run: the mean over targets of the lowest effective sample size "
                      "(a fraction of the particles), and the targets whose particles collapsed onto one at some step "
                      "(ESS x particles < 1.5): " + "; ".join(
                          f"{LABELS[n]} {statistics.mean(r['ess']):.3f}, "
                          f"{sum(collapsed(e, r['particles']) for e in r['ess'])} of {len(r['ess'])}"
                          for n, r in particles.items()) + "."]
    return lines


def overrides_text(a) -> str:
    """The --overrides, as the table's sampler line says them."""
    return "".join(f", {k} = `{json.dumps(v)}`" for k, v in a.overrides.items())


def data_lines(reference: dict, runs: dict, a) -> list[str]:
    """What the data neighbours are, and how close each feature's come to the target (beside its generations)."""
    lines = ["", (f"Data neighbours: for each target and feature, the {a.neighbours} nearest of the "
                  f"{reference['count']} training images of `{a.train}` (28 x 28 padded to 32 x 32) by the feature's "
                  f"own distance (Euclidean, between the features the inversion matched; a training image identical "
                  f"to the target excluded): {reference['seconds']:.0f} s, training features cached in "
                  f"`{os.path.join(a.out, 'data')}`. Their cosine to the target's feature, over every neighbour of "
                  f"every target, beside that of the feature's generations:"), "",
             "| feature | data neighbours' cosine: mean | worst | generations' cosine: mean | worst |",
             "| --- | --- | --- | --- | --- |"]
    for name in FEATURES:
        cos, gen = reference["neighbours"][name]["cosine"], runs[name]["cosine"]
        lines.append(f"| {LABELS[name]} | {float(cos.mean()):.3f} | {float(cos.min()):.3f} | "
                     f"{sum(gen) / len(gen):.3f} | {min(gen):.3f} |")
    return lines


def row_lines(m: dict, d: dict) -> list[str]:
    """The factor table (measures m of the runs, d of the data neighbours) and each feature's verdicts."""
    low, high = GOAL_DATA
    lines = ["", ("Each measure over the generations of a target, averaged over targets; ratio = invariant feature / "
                  "control; goal: ignored factor >= 1.5x the control, encoded factor <= the control. Data "
                  f"neighbours: the same measure over the feature's data neighbours of each target; second goal: "
                  f"generations / data within [{low}, {high}]."), "",
             ("| feature | factor | role | measure | invariant feature | control | ratio | unguided | data neighbours "
              f"| goal | pass | generations / data | within [{low}, {high}] of data |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    verdicts = {}
    for feature, factor, role, key, what in ROWS:
        value, control, free, ref = m[feature][key], m["control"][key], m["unguided"][key], d[feature][key]
        (ratio, ok), (to_data, ok_data) = judge(role, value, control), judge_data(value, ref)
        verdicts.setdefault(feature, []).append((ok, ok_data))
        goal = f">= {GOAL_IGNORED}x" if role == "ignored" else "<= control"
        lines.append(f"| {LABELS[feature]} | {factor} | {role} | {what} | {value:.4f} | {control:.4f} | "
                     f"{ratio:.3f} | {free:.4f} | {ref:.4f} | {goal} | {yes(ok)} | {to_data:.3f} | {yes(ok_data)} |")
    lines += ["", "| feature | passes (every row) | within the data's spread (every row) |", "| --- | --- | --- |"]
    lines += [f"| {LABELS[f]} | {yes(all(o for o, _ in v))} | {yes(all(o for _, o in v))} |"
              for f, v in verdicts.items()]
    return lines


def yes(ok: bool) -> str:
    """A verdict as the tables write it."""
    return "yes" if ok else "**no**"


def extra_lines(m: dict, d: dict, real_p95: float) -> list[str]:
    """Measures beside the table's, for the runs and the feature's data neighbours (``real_p95``: the real test images'
    prior score p95)."""
    extra = [("left_half", "left_rmse", "RMS pixel distance to the target, left half"),
             ("class_posterior", "class_agree", "ResNet class of a generation = the target's"),
             ("class_posterior", "vit_agree", "the ViT's class of a generation = the ViT's class of the target"),
             ("class_posterior", "pairwise_vs_unguided_class",
              "pairwise distance / that of unguided samples of the target's class")]
    extra += [(f, "prior_score_median", f"prior score median (lower is more typical; the real test images' p95: "
                                        f"{real_p95:.4f})") for f in FEATURES[1:]]
    lines = ["", "More measures (same layout: invariant feature / control / unguided / the feature's data neighbours):",
             "", "| feature | measure | invariant feature | control | unguided | data neighbours |",
             "| --- | --- | --- | --- | --- | --- |"]
    return lines + [f"| {LABELS[f]} | {what} | {m[f][k]:.4f} | {m['control'][k]:.4f} | {m['unguided'][k]:.4f} | "
                    f"{d[f][k]:.4f} |" for f, k, what in extra]


def figure(targets: torch.Tensor, runs: dict, path: str, rows: int, zoom: int = 2) -> None:
    """Rows: targets; column groups: target | each run's generations (control, the invariant features, unguided)."""
    from PIL import Image, ImageDraw
    n = min(rows, len(targets))
    tile, pad, gap, top = 32 * zoom, 1, 8, 14
    groups = [("target", targets[:n, None])] + [(LABELS[name], runs[name]["images"][:n]) for name in CONFIGS]
    widths = [t.shape[1] * (tile + pad) for _, t in groups]
    sheet = Image.new("RGB", (sum(widths) + gap * (len(groups) - 1), top + n * (tile + pad)), "white")
    draw, x = ImageDraw.Draw(sheet), 0
    for (label, tiles), width in zip(groups, widths):
        draw.text((x + 1, 1), label[: max(1, width // 6)], fill="black")
        for i, j in itertools.product(range(n), range(tiles.shape[1])):
            img = (tiles[i, j, 0].clamp(0, 1) * 255).round().byte().numpy()
            sheet.paste(Image.fromarray(img, "L").resize((tile, tile), Image.NEAREST),
                        (x + j * (tile + pad), top + i * (tile + pad)))
        x += width + gap
    sheet.save(path)


def write_runs(ids: list[str], runs: dict, near: dict, a) -> None:
    """Run folders for ``lit-featinv report``: OUT/runs/FEATURE/generations and OUT/runs/FEATURE/data (the data
    neighbours, a ``--reference-run``), OUT/runs/unguided (a ``--baseline``)."""
    files = [os.path.join(os.path.abspath(a.images), f"{i}.png") for i in ids]
    for name, r in runs.items():
        cos = torch.tensor(r["cosine"]).view(len(ids), -1)
        folder = os.path.join(a.out, "runs", *((name,) if name == "unguided" else (name, "generations")))
        write_run(folder, ids, files, r["images"], [[{"cosine": float(c)} for c in row] for row in cos])
    for name, found in near.items():
        write_run(os.path.join(a.out, "runs", name, "data"), ids, files, found["images"],
                  [[{"cosine": float(c)} for c in row] for row in found["cosine"]])


# ---- main ---------------------------------------------------------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/invariances")
    p.add_argument("--targets", type=int, default=16, help="the first N images of --images")
    p.add_argument("--generations", type=int, default=8, help="generations per target")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--recurrence", type=int, default=4, help="K, guided iterations per step")
    p.add_argument("--scale", type=float, default=0.8, help="guidance scale w")
    p.add_argument("--sigma", type=float, default=2.0, help="the blurred feature's Gaussian sigma (px)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-targets", type=int, default=2, help="targets per batch (x generations images)")
    p.add_argument("--features", default=",".join(CONFIGS), help="runs to generate (the others must be in --out "
                                                                 "with --reuse)")
    p.add_argument("--config", default="quickstart", help="preset or YAML whose sampler and prior are used")
    p.add_argument("--overrides", default="{}", metavar="JSON", help="JSON overrides of the config's model.init_args "
                   "for the guided runs, e.g. a particle sampler: {\"sampler\": {\"class_path\": ...}}; the unguided "
                   "run takes them without its sampler")
    p.add_argument("--images", default=os.path.join(ROOT, "assets", "fmnist-test32"))
    p.add_argument("--train", default=data.TRAIN, help="the data reference's training images (idx, 28 x 28)")
    p.add_argument("--neighbours", type=int, default=16, help="k, data neighbours per target and feature")
    p.add_argument("--figure-targets", type=int, default=8, help="targets shown in the figures")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--beside", metavar="RESULTS", help="another sampler's results file of this benchmark (same "
                   "targets), e.g. benchmarks/results/invariances-full.md: the posterior goal side by side")
    p.add_argument("--reuse", action="store_true", help="reuse generations saved in --out by a run with the same "
                                                       "settings")
    a = p.parse_args(argv)
    a.argv = list(argv)
    try:
        a.overrides = json.loads(a.overrides)
    except ValueError as err:
        raise SystemExit(f"invariances: --overrides is not JSON: {err}") from None
    if not isinstance(a.overrides, dict):
        raise SystemExit(f"invariances: --overrides must be a JSON object of model.init_args other than those the "
                         f"benchmark sets ({sorted(SET_BY_DECODER)}), not {a.overrides!r}")
    if taken := sorted(SET_BY_DECODER & set(a.overrides)):
        raise SystemExit(f"invariances: --overrides must be a JSON object of model.init_args other than {taken} "
                         f"(set by the benchmark's own options)")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    if not os.path.exists(a.train):
        raise SystemExit(f"invariances: --train {a.train} not found: apt-get install dataset-fashion-mnist")
    if a.beside and not os.path.exists(a.beside):
        raise SystemExit(f"invariances: --beside {a.beside} not found")
    start = time.perf_counter()
    ids, targets = load_targets(a.images, a.targets)
    wanted = a.features.split(",")
    a.reuse = a.reuse or set(wanted) != set(CONFIGS)
    unknown = [n for n in wanted if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"invariances: --features {unknown} unknown; known: {CONFIGS}")
    runs = {}
    for name in (n for n in CONFIGS if n in wanted):
        print(f"invariances: {name} ...", flush=True)
        runs[name] = generate(name, targets, a)
    missing = [n for n in CONFIGS if n not in wanted and not os.path.exists(os.path.join(a.out, "images", f"{n}.pt"))]
    if missing:
        print(f"invariances: generated {list(runs)}; {missing} not saved in {a.out} yet: run them (--features) "
              f"for the table", flush=True)
        return 0
    for name in (n for n in CONFIGS if n not in wanted):
        runs[name] = generate(name, targets, a)
    target_resnet, target_vit = classes(targets, "resnet10t"), classes(targets, "vit-tiny")
    labels = {name: labels_of(r["images"], target_resnet, target_vit, a.config) for name, r in runs.items()}
    by_class = unguided_class_distances(runs["unguided"]["images"], labels["unguided"]["resnet"])
    results = {name: measures(r["images"], targets, a.sigma, by_class, labels[name]) for name, r in runs.items()}
    reference = data.reference(FEATURES, targets, a)
    near = reference["neighbours"]
    data_results = {name: measures(near[name]["images"], targets, a.sigma, by_class,
                                   labels_of(near[name]["images"], target_resnet, target_vit, a.config))
                    for name in FEATURES}
    real = len([p for p in os.listdir(a.images) if p.endswith(".png")])  # every test image there: the real reference
    real_p95 = float(torch.tensor(scores_of(a.config, load_targets(a.images, real)[1])).quantile(0.95))
    wall = time.perf_counter() - start
    text = table(results, runs, a, reference, data_results, real_p95)
    with open(os.path.join(a.out, "invariances.md"), "w") as f:
        f.write(text)
    figure(targets, runs, os.path.join(a.out, "invariances.png"), a.figure_targets)
    data.data_figure(targets, [(LABELS[n], runs[n]["images"], near[n]["images"]) for n in FEATURES],
                     os.path.join(a.out, "invariances-data.png"), a.figure_targets)
    write_runs(ids, runs, near, a)
    print(text.split("All measures")[0], flush=True)
    print(f"invariances: wrote {os.path.join(a.out, 'invariances.md')}, invariances.png and invariances-data.png in "
          f"{wall:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
