"""Exact-posterior benchmark: how far a sampler's generations are from the feature's posterior, where it is known.

The world: the zoo's Gaussian mixture of Fashion-MNIST (``assets/zoo/fmnist-gmm``, ``lit_featinv.GaussianMixturePrior``:
its denoiser is exact) and linear features A x of the image in [-1, 1] (``lit_featinv.LinearExtractor``), whose
posterior p(x | A x = A t) is a mixture of Gaussians in closed form (``GaussianMixture.condition``). Features with
known null spaces: ``left_half`` (a mask of the left 16 columns), ``blur`` (the Gaussian blur of sigma 2 px as a
matrix, zero beyond the border, truncated to its singular values >= 1e-2 of the largest: rank 205, so that its null
space is the detail the blur removes), ``random16`` (a random 16-d projection, seeded) and ``pca32`` (the mixture's
first 32 principal coordinates). Held out (named in ``--features``, not run by default; no sampler's settings were
chosen on them): ``top_half`` (a mask of the top 16 rows), ``pool4`` (4 x 4 average pooling: an 8 x 8 thumbnail) and
``random64`` (another random projection, 64-d). Targets: the first ``--targets`` test items of
``assets/fmnist-test32``.

Each sampler generates ``--generations`` images per target (saved as PNGs are: clamped, 8-bit). The reference is
``--reference`` exact posterior draws per target, clamped and quantised the same way; ``exact x G`` is a second set of
G exact draws measured as if it were a sampler: the values a perfect sampler gets with G generations. Per sampler and
feature, averaged over targets:
- ``null spread``: the generations' spread in A's null space (RMS over targets of the total variance of (I - B^T B) x)
  against the reference's; 1 is right, < 1 squeezes the posterior, > 1 inflates it;
- ``mean offset``: the distance of the generations' mean from the reference's, in units of the posterior's spread
  (sqrt of its total variance);
- ``residual``: ||A x - A t|| in units of the feature's spread under the prior (sqrt tr(A Sigma A^T), Sigma the
  mixture's covariance), beside the reference's own (clamping moves a projection off its target);
- ``SW``: the sliced Wasserstein distance (POT, ``ot.sliced_wasserstein_distance``, 500 projections) between the
  generations and the reference draws.

Samplers: ``guided`` is ``configs/gmm/guided.yaml`` as shipped (DDIM 50, K = 8, w = 0.5, the UNet gradient), a grid
``w{W}_K{K}`` of w in {0.25, 0.5, 1, 2} x K in {1, 4, 8} (w0.5_K8 is the shipped one), and ``unguided`` (w = 0, K =
1). ``--sampler NAME=JSON`` adds one: JSON overrides of the preset's ``model.init_args``.

Run: python benchmarks/posterior.py --out runs/posterior [--targets 16 --generations 16 --threads 2]
Writes OUT/posterior.md (tables, command), OUT/posterior.json, OUT/posterior.png (target | exact posterior draws |
generations, per feature), OUT/features/NAME.safetensors, OUT/generations/ (reused by a rerun with the same
settings) and, per feature, run folders for ``lit-featinv report`` (OUT/runs/FEATURE/{exact,guided,unguided}: the
exact draws as a ``--reference-run``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run_folders import write_run  # noqa: E402
PRESET = "gmm/guided"
FEATURES = ["left_half", "blur", "random16", "pca32"]  # the default; HELD_OUT: features no setting was chosen on
HELD_OUT = ["top_half", "pool4", "random64"]
BLUR_SIGMA, BLUR_RTOL = 2.0, 1e-2
WS, KS = (0.25, 0.5, 1.0, 2.0), (1, 4, 8)
SQUEEZE, INFLATE = 0.8, 1.25  # null spread below / above: the sampler squeezes / inflates the posterior
GOAL_RESIDUAL = 0.10  # issue 35, goal 1: the residual at most this above the exact draws' own (clamped, quantised)


# ---- the world ------------------------------------------------------------------------------------------------------
def mixture():
    from lit_featinv import GaussianMixturePrior
    return GaussianMixturePrior(os.path.join(ROOT, "assets", "zoo", "fmnist-gmm")).mixture


def gaussian_blur_matrix(sigma: float, size: int = 32) -> torch.Tensor:
    """The separable Gaussian blur of a size x size image (zero beyond the border) as a [D, D] matrix."""
    r = math.ceil(3 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float64) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    one = torch.zeros(size, size, dtype=torch.float64)
    for i, j in itertools.product(range(size), range(size)):
        if abs(i - j) <= r:
            one[i, j] = k[j - i + r]
    return torch.kron(one, one)  # rows then columns, row-major


def truncated(matrix: torch.Tensor, rtol: float) -> torch.Tensor:
    """``matrix`` with its singular values below ``rtol`` of the largest set to 0."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    keep = s >= rtol * s[0]
    return (u[:, keep] * s[keep]) @ vh[keep]


def left_half(world, seed: int) -> torch.Tensor:
    return mask_rows(world, lambda side: (slice(None), slice(0, side // 2)))


def top_half(world, seed: int) -> torch.Tensor:
    return mask_rows(world, lambda side: (slice(0, side // 2), slice(None)))


def mask_rows(world, region) -> torch.Tensor:
    """The pixels of ``region(side)`` of the side x side image, as rows of the identity."""
    side = math.isqrt(world.dim)
    kept = torch.zeros(side, side, dtype=torch.bool)
    kept[region(side)] = True
    return torch.eye(world.dim, dtype=torch.float64)[kept.flatten()]


def blur(world, seed: int) -> torch.Tensor:
    return truncated(gaussian_blur_matrix(BLUR_SIGMA, math.isqrt(world.dim)), BLUR_RTOL)


def random_projection(count: int, offset: int):
    def build(world, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed + offset)
        return torch.randn(count, world.dim, generator=gen, dtype=torch.float64) / math.sqrt(world.dim)
    return build


def pca32(world, seed: int) -> torch.Tensor:
    return torch.linalg.eigh(world.total_covariance())[1].flip(1)[:, :32].T.contiguous()


def pool4(world, seed: int) -> torch.Tensor:
    """4 x 4 average pooling: an 8 x 8 thumbnail; its null space is the detail within each block."""
    side = math.isqrt(world.dim)
    pool = torch.zeros(side // 4, side, dtype=torch.float64)
    for i in range(side // 4):
        pool[i, 4 * i: 4 * i + 4] = 0.25
    return torch.kron(pool, pool)


BUILDERS = {"left_half": left_half, "blur": blur, "random16": random_projection(16, 0), "pca32": pca32,
            # held out: never used to choose a sampler's settings (issue 35, goal 1's "features it has never seen")
            "top_half": top_half, "pool4": pool4, "random64": random_projection(64, 1)}


def feature_matrices(world, names: list[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """The linear features [m, D], float64."""
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise SystemExit(f"posterior: unknown feature(s) {unknown}; known: {list(BUILDERS)}")
    return {name: BUILDERS[name](world, seed) for name in names}


def as_saved(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as a saved PNG holds them: clamped and quantised to 8 bits."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


@dataclass
class Truth:
    """One feature's exact posterior for the targets t [N, D]: its reference draws and G other exact draws (both as
    saved), its null-space projector and the feature's spread under the prior; ``measure`` judges generations."""
    posterior: object
    reference: torch.Tensor
    exact: torch.Tensor
    null: torch.Tensor
    spread: float
    matrix: torch.Tensor
    t: torch.Tensor

    def measure(self, x: torch.Tensor) -> dict:
        return measure(x, self.reference, self.t, self.matrix, self.null, self.spread)


def truth(world, matrix: torch.Tensor, t: torch.Tensor, references: int, generations: int, seed: int,
          covariance: torch.Tensor) -> Truth:
    """The exact posterior of feature ``matrix`` at targets t, drawn with ``seed`` (the same draws in every
    script)."""
    posterior = world.condition(matrix, t @ matrix.T)
    gen = torch.Generator().manual_seed(seed)
    reference = as_saved(posterior.sample(references, gen))
    exact = as_saved(posterior.sample(generations, gen))
    spread = float(torch.trace(matrix @ covariance @ matrix.T).sqrt())
    return Truth(posterior, reference, exact, posterior.null_projector(), spread, matrix, t)


def load_targets(count: int) -> tuple[list[str], torch.Tensor]:
    """The first ``count`` test items: ids and images [N, 1, 32, 32] in [0, 1]."""
    from lit_featinv.runs import load_image
    folder = os.path.join(ROOT, "assets", "fmnist-test32")
    paths = sorted(p for p in os.listdir(folder) if p.endswith(".png"))[:count]
    if len(paths) < count:
        raise SystemExit(f"posterior: {folder} has {len(paths)} images, --targets asks for {count}")
    return [os.path.splitext(p)[0] for p in paths], torch.stack([load_image(os.path.join(folder, p)) for p in paths])


# ---- samplers -------------------------------------------------------------------------------------------------------
def samplers(extra: list[str]) -> dict[str, dict]:
    """Name -> overrides of the preset's model.init_args."""
    def guidance(w):
        return {"class_path": "lit_featinv.UNetGradient", "init_args": {"scale": w, "clip_theta": 3.0}}
    out = {"guided": {}, "unguided": {"guidance": guidance(0.0), "recurrence": 1}}
    out |= {f"w{w:g}_K{k}": {"guidance": guidance(w), "recurrence": k} for w, k in itertools.product(WS, KS)}
    for spec in extra:
        name, _, overrides = spec.partition("=")
        try:
            out[name] = json.loads(overrides)
        except ValueError as err:
            raise SystemExit(f"posterior: --sampler {spec!r} is not NAME=JSON: {err}") from None
    return out


def generate(name: str, overrides: dict, feature: str, matrix_file: str, targets: torch.Tensor, a) -> dict:
    """A sampler's generations of every target, as saved: x [N, G, D] in [-1, 1]; reused when saved with the same
    settings."""
    from lit_featinv import FeatureInversion
    from lit_featinv.method import collapsed
    from lit_featinv.runs import collate, inversion, target_items
    path = os.path.join(a.out, "generations", f"{feature}-{name}.pt")
    settings = {"overrides": overrides, "generations": a.generations, "targets": len(targets), "seed": a.seed}
    if os.path.exists(path) and not a.fresh:
        saved = torch.load(path)
        if saved["settings"] == settings and ("ess" in saved or "sampler" not in overrides):
            return saved
    extractor = {"class_path": "lit_featinv.LinearExtractor", "init_args": {"matrix": matrix_file}}
    model = FeatureInversion.from_config(PRESET, **({"extractor": extractor, "samples_per_target": a.generations,
                                                     "seed": a.seed, "prior_score": None, "progress": False}
                                                    | overrides))
    begun = time.perf_counter()
    out = inversion(model.predict_step(collate(target_items(images=targets))), "pt")
    seconds = time.perf_counter() - begun
    x = (out.images * 2 - 1).flatten(1).double().view(len(targets), a.generations, -1)
    saved = {"x": x, "nfe": out.metrics[0].get("nfe"), "backward": out.metrics[0].get("unet_backward"),
             "seconds": seconds, "settings": settings}
    records = [m["particles"] for m in out.metrics[:: a.generations] if "particles" in m]
    if records:  # particles: each target's lowest effective sample size and how often it was resampled
        saved["ess"] = {"lowest": sum(min(r["ess"]) for r in records) / len(records),
                        "collapsed": sum(collapsed(min(r["ess"]), model.sampler.particles) for r in records),
                        "resamplings": sum(len(r["resampled"]) for r in records) / len(records)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(saved, path)
    print(f"posterior: {feature} {name}: {x.shape[0]} x {x.shape[1]} in {seconds:.0f} s", flush=True)
    return saved


# ---- measures -------------------------------------------------------------------------------------------------------
def null_variance(x: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """Per target, the total variance of x [N, G, D] in the null space (projector ``null``) [N]."""
    centred = (x - x.mean(1, keepdim=True)) @ null
    return (centred ** 2).sum((1, 2)) / (x.shape[1] - 1)


def measure(x: torch.Tensor, reference: torch.Tensor, t: torch.Tensor, matrix: torch.Tensor, null: torch.Tensor,
            prior_spread: float) -> dict:
    """The measures of generations x [N, G, D] against reference draws [N, R, D] of the posterior of targets t [N, D]."""
    import ot
    spread = null_variance(x, null) / null_variance(reference, null)
    total = ((reference - reference.mean(1, keepdim=True)) ** 2).sum((1, 2)) / (reference.shape[1] - 1)
    offset = (x.mean(1) - reference.mean(1)).norm(dim=1) / total.sqrt()
    residual = ((x - t[:, None]) @ matrix.T).norm(dim=2) / prior_spread
    sw = [float(ot.sliced_wasserstein_distance(x[n].numpy(), reference[n].numpy(), n_projections=500, seed=n))
          for n in range(len(x))]
    return {"null_spread": float((null_variance(x, null).sum() / null_variance(reference, null).sum()).sqrt()),
            "null_spread_min": float(spread.sqrt().min()), "null_spread_max": float(spread.sqrt().max()),
            "mean_offset": float(offset.mean()), "residual": float(residual.mean()), "sw": sum(sw) / len(sw)}


def verdict(spread: float) -> str:
    return "squeezes" if spread < SQUEEZE else "inflates" if spread > INFLATE else "follows"


# ---- writing --------------------------------------------------------------------------------------------------------
def table(results: dict, runs: dict, a, world_note: str) -> str:
    lines = [f"# Exact-posterior benchmark ({a.targets} targets x {a.generations} generations)", "",
             f"`python benchmarks/posterior.py {shlex.join(a.argv)}`, {time.strftime('%Y-%m-%d')}, "
             f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}. {world_note}", "",
             f"Reference: {a.reference} exact posterior draws per target, clamped and quantised as a saved PNG. "
             f"`exact x {a.generations}`: {a.generations} other exact draws, measured as a sampler is (what a perfect "
             f"sampler gets). null spread: generations / reference in A's null space (1 is right; < {SQUEEZE} "
             f"squeezes, > {INFLATE} inflates; in brackets the range over targets); mean offset: |mean - reference "
             f"mean| / posterior spread; residual: ||A x - A t|| / the feature's spread under the prior; SW: sliced "
             f"Wasserstein distance to the reference draws (lower is closer). Particles (model.sampler): the mean over "
             f"targets of the lowest effective sample size (a fraction of the particles), the targets whose particles "
             f"collapsed onto one (ESS x particles < 1.5 at some step), and the mean number of resamplings.", ""]
    for feature, rows in results.items():
        ref = rows["reference"]
        lines += [f"## {feature} (A: {runs[feature]['shape']}, null space of dimension {runs[feature]['null']})", "",
                  f"Reference residual (exact draws, clamped and quantised): {ref['residual']:.4f}.", "",
                  "| sampler | evals / image | s / image | null spread | reads the posterior | mean offset | residual "
                  "| SW | SW / exact's | particles: lowest ESS, targets collapsed, resamplings |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        floor = rows[f"exact x {a.generations}"]["sw"]
        for name, m in rows.items():
            if name == "reference":
                continue
            cost = runs[feature]["samplers"].get(name, {})
            evals = cost.get("nfe", "–") if name in runs[feature]["samplers"] else "exact"
            secs = f"{cost['seconds'] / (a.targets * a.generations):.3f}" if "seconds" in cost else "–"
            ess = cost.get("ess")
            particles = f"{ess['lowest']:.3f}, {ess['collapsed']} of {a.targets}, {ess['resamplings']:.1f}" if ess else "–"
            lines.append(f"| {name} | {evals} | {secs} | {m['null_spread']:.3f} ({m['null_spread_min']:.2f}-"
                         f"{m['null_spread_max']:.2f}) | {verdict(m['null_spread'])} | {m['mean_offset']:.3f} | "
                         f"{m['residual']:.4f} | {m['sw']:.3f} | {m['sw'] / floor:.2f} | {particles} |")
        lines += ["", goal_line(rows, a.generations), ""]
    lines += ["All measures:", "", "```json", json.dumps(results, indent=1), "```", ""]
    return "\n".join(lines)


def goal_line(rows: dict, generations: int) -> str:
    """Issue 35's first goal for each sampler of one feature: null spread within [SQUEEZE, INFLATE], residual at most
    the reference's + :data:`GOAL_RESIDUAL`, SW at most half of ``guided``'s (where ``guided`` ran; said to be out of
    reach where exact draws, as many as the generations, do not meet it: the SW of finite sets has that floor)."""
    ceiling = rows["reference"]["residual"] + GOAL_RESIDUAL
    sw = rows["guided"]["sw"] / 2 if "guided" in rows else None
    parts = []
    for name, m in rows.items():
        if name in ("reference", f"exact x {generations}"):
            continue
        checks = [SQUEEZE <= m["null_spread"] <= INFLATE, m["residual"] <= ceiling]
        checks += [m["sw"] <= sw] if sw is not None else []
        parts.append(f"{name} {' / '.join(yes(ok) for ok in checks)}")
    floor = rows.get(f"exact x {generations}", {}).get("sw")
    below = sw is not None and floor is not None and sw < floor
    sw_text = (f", SW <= half of `guided`'s ({sw:.3f}"
               + (f", below the {floor:.3f} of {generations} exact draws: out of reach of {generations} generations"
                  if below else "") + ")") if sw is not None else ""
    return (f"Goal 1 (null spread within [{SQUEEZE}, {INFLATE}], residual <= the reference's + {GOAL_RESIDUAL} "
            f"({ceiling:.4f}){sw_text}): " + "; ".join(parts) + ".")


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def figure(ids, targets01, panels: dict, path: str, rows: int, shown: int = 8, zoom: int = 2) -> None:
    """Per feature: rows of targets; target | exact posterior draws | each named sampler's generations."""
    from PIL import Image, ImageDraw
    tile, pad, gap, top = 32 * zoom, 1, 8, 14
    blocks = []
    for feature, groups in panels.items():
        n = min(rows, len(targets01))
        cols = [("target", targets01[:n, None] * 2 - 1)] + [(label, x[:n, :shown]) for label, x in groups]
        widths = [c.shape[1] * (tile + pad) for _, c in cols]
        sheet = Image.new("RGB", (sum(widths) + gap * (len(cols) - 1), top * 2 + n * (tile + pad)), "white")
        draw, x0 = ImageDraw.Draw(sheet), 0
        draw.text((1, 1), feature, fill="black")
        for (label, images), width in zip(cols, widths):
            draw.text((x0 + 1, top + 1), label[: max(1, width // 6)], fill="black")
            for i, j in itertools.product(range(n), range(images.shape[1])):
                img = ((images[i, j].view(32, 32).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
                sheet.paste(Image.fromarray(img, "L").resize((tile, tile), Image.NEAREST),
                            (x0 + j * (tile + pad), 2 * top + i * (tile + pad)))
            x0 += width + gap
        blocks.append(sheet)
    whole = Image.new("RGB", (max(b.width for b in blocks), sum(b.height + gap for b in blocks)), "white")
    y = 0
    for b in blocks:
        whole.paste(b, (0, y))
        y += b.height + gap
    whole.save(path)


def metrics_of(x: torch.Tensor, t: torch.Tensor, matrix: torch.Tensor) -> list[list[dict]]:
    """Per image of x [N, G, D]: its cosine and relative L2 to its target's feature A t, as a run's metrics say."""
    got, want = x @ matrix.T, (t @ matrix.T)[:, None]
    cosine = torch.nn.functional.cosine_similarity(got, want.expand_as(got), dim=2)
    rel = (got - want).norm(dim=2) / want.norm(dim=2)
    return [[{"cosine": float(c), "rel_l2": float(r)} for c, r in zip(cs, rs)] for cs, rs in zip(cosine, rel)]


def as_images(x: torch.Tensor) -> torch.Tensor:
    """x [N, G, D] in [-1, 1] -> images [N, G, 1, 32, 32] in [0, 1]."""
    return (x.view(*x.shape[:2], 1, 32, 32) + 1) / 2


def sampler_config(overrides: dict, matrix_file: str, a) -> dict:
    """The preset's model section as a sampler ran it (its overrides and the feature's matrix), for a run folder."""
    import yaml
    from lit_featinv import CONFIGS
    model = yaml.safe_load((CONFIGS / f"{PRESET}.yaml").read_text())["model"]
    prior = model["init_args"]["prior"]["init_args"]
    prior["pretrained"] = os.path.normpath(os.path.join(CONFIGS, os.path.dirname(PRESET), prior["pretrained"]))
    extractor = {"class_path": "lit_featinv.LinearExtractor", "init_args": {"matrix": matrix_file}}
    init = model["init_args"] | {"extractor": extractor, "samples_per_target": a.generations, "seed": a.seed} | overrides
    return {"model": {"class_path": model["class_path"], "init_args": init}}


# ---- main -----------------------------------------------------------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/posterior")
    p.add_argument("--targets", type=int, default=16, help="the first N test items of assets/fmnist-test32")
    p.add_argument("--generations", type=int, default=16, help="generations per target")
    p.add_argument("--reference", type=int, default=512, help="exact posterior draws per target for the reference")
    p.add_argument("--features", default=",".join(FEATURES))
    p.add_argument("--samplers", default=None, help="comma-separated sampler names (default: all)")
    p.add_argument("--sampler", action="append", default=[], metavar="NAME=JSON", help="another sampler: JSON "
                   "overrides of the preset's model.init_args")
    p.add_argument("--figure-samplers", default="guided", help="samplers shown in the figure")
    p.add_argument("--figure-targets", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--fresh", action="store_true", help="generate again even where saved generations fit")
    a = p.parse_args(argv)
    a.argv = list(argv)
    return a


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file
    a = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(a.threads)
    start = time.perf_counter()
    world = mixture()
    ids, targets01 = load_targets(a.targets)
    t = (targets01 * 2 - 1).flatten(1).double()
    names = a.features.split(",")
    matrices = feature_matrices(world, names, a.seed)
    chosen = samplers(a.sampler)
    if a.samplers:
        unknown = [n for n in a.samplers.split(",") if n not in chosen]
        if unknown:
            raise SystemExit(f"posterior: --samplers {unknown} unknown; known: {list(chosen)}")
        chosen = {n: chosen[n] for n in a.samplers.split(",")}
    covariance = world.total_covariance()
    results, runs, panels = {}, {}, {}
    target_files = [os.path.join(ROOT, "assets", "fmnist-test32", f"{i}.png") for i in ids]
    for feature, matrix in matrices.items():
        file = os.path.join(a.out, "features", f"{feature}.safetensors")
        os.makedirs(os.path.dirname(file), exist_ok=True)
        save_file({"matrix": matrix.float().contiguous()}, file)
        known = truth(world, matrix, t, a.reference, a.generations, a.seed, covariance)
        exact = known.exact
        rows = {"reference": known.measure(known.reference), f"exact x {a.generations}": known.measure(exact)}
        made = {}
        for name, overrides in chosen.items():
            made[name] = generate(name, overrides, feature, os.path.abspath(file), targets01, a)
            rows[name] = known.measure(made[name]["x"])
        results[feature] = rows
        runs[feature] = {"shape": list(matrix.shape), "null": int(torch.trace(known.null).round()),
                         "samplers": {n: {k: m[k] for k in ("nfe", "backward", "seconds", "ess") if k in m}
                                      for n, m in made.items()}}
        panels[feature] = [("exact posterior", exact)] + [(n, made[n]["x"]) for n in a.figure_samplers.split(",")
                                                          if n in made]
        write_run(os.path.join(a.out, "runs", feature, "exact"), ids, target_files, as_images(exact),
                  metrics_of(exact, t, matrix))
        for name in (n for n in made if n in ("guided", "unguided")):
            x = made[name]["x"]
            write_run(os.path.join(a.out, "runs", feature, name), ids, target_files, as_images(x),
                      metrics_of(x, t, matrix), sampler_config(chosen[name], os.path.abspath(file), a))
    generation = sum(m["seconds"] for r in runs.values() for m in r["samplers"].values())
    note = (f"World: assets/zoo/fmnist-gmm ({len(world.weights)} components, rank {world.factors.shape[-1]}); "
            f"samplers: the preset `{PRESET}` with the overrides named. Generation {generation:.0f} s (saved "
            f"generations keep their own time), this run {time.perf_counter() - start:.0f} s in all.")
    text = table(results, runs, a, note)
    with open(os.path.join(a.out, "posterior.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "posterior.json"), "w") as f:
        json.dump({"results": results, "runs": runs, "argv": a.argv}, f, indent=1)
    figure(ids, targets01, panels, os.path.join(a.out, "posterior.png"), a.figure_targets)
    print(text.split("All measures")[0], flush=True)
    print(f"posterior: wrote {os.path.join(a.out, 'posterior.md')} and posterior.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
