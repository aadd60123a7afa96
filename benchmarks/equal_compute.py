"""Equal compute on Fashion-MNIST (issue 35, goal 3): the best generation per target of samplers that spend the same
UNet evaluations per target, on the first N test images, one run after another in one process.

    python benchmarks/equal_compute.py --count 64 --out runs/equal_compute --threads 2 \
        [--sampler NAME=CONFIG[:CLI OVERRIDES] ...]

Default samplers: ``preset`` (``configs/fmnist/pixel_resnet.yaml``, 4 generations x 400 UNet evaluations) and
``particles`` (``configs/fmnist/posterior_resnet.yaml``, 4 saved of 8 particles, the same evaluations per target).
Per sampler, over the targets: the UNet forward and backward evaluations per target (the sum of the saved
generations' ``nfe`` / ``unet_backward``: with particles, each saved generation carries its share of them all), the
cosine of the best saved generation (as saved, 8-bit PNG) per target, its mean and worst and the targets whose best
stays below 0.95; the other classifier (zoo ViT) agreeing with the target's class on the best generation; and the
naturalness of the best generations (``benchmarks/naturalness.py``: the prior score's median, KID x 1000), beside
the mean cosine of every saved generation and how far apart a target's saved generations are (the RMS pixel distance
between two of them, averaged over targets: near 0 where the saved set is copies of one particle). Writes
``results.md`` (with the command and the per-target table) to ``--out``. ``--reuse`` reads a sampler's finished run
there instead of running it again, and resumes an unfinished one (its seconds then unknown: '-'), so that the
samplers of one table can run in separate sessions; ``--tabulate`` runs nothing and writes the table of the folders
as they stand, over the targets every sampler has finished. Needs: apt-get install dataset-fashion-mnist
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist import export  # noqa: E402
from invariances import pairwise  # noqa: E402
from naturalness import of_images  # noqa: E402
from quality import VIT, agreement  # noqa: E402

from lit_featinv.app import run  # noqa: E402

SAMPLERS = {"preset": "configs/fmnist/pixel_resnet.yaml", "particles": "configs/fmnist/posterior_resnet.yaml"}
FAIL = 0.95  # a target whose best generation stays below this cosine failed (issue 35)


def best_per_target(lines: list[dict]) -> list[dict]:
    """Per target (in order of first appearance), its saved generation of the highest cosine (a failed one: none)."""
    groups = collections.defaultdict(list)
    for line in lines:
        groups[line["id"]].append(line)
    ok = lambda line: line.get("cosine") is not None and line.get("status", "ok") == "ok"  # noqa: E731
    return [max((g for g in group if ok(g)), key=lambda g: g["cosine"], default={"id": group[0]["id"], "cosine": None})
            for group in groups.values()]


def measure(name: str, config: str, extra: list[str], targets: str, out: str, threads: int,
            reuse: bool = False) -> dict:
    """One sampler's run (``reuse``: a finished run of it in ``out``, with its recorded seconds, is read instead)."""
    return row(name, config, os.path.join(out, name), ran_for(name, config, extra, targets, out, threads, reuse))


def finished_targets(folder: str, generations: int = 4) -> set[str]:
    """The targets of a run folder with all their generations' metrics lines (a run stopped part way has fewer)."""
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        counts = collections.Counter(json.loads(line)["id"] for line in f)
    return {target for target, n in counts.items() if n >= generations}


def ran_for(name: str, config: str, extra: list[str], targets: str, out: str, threads: int,
            reuse: bool) -> float | None:
    """Run a sampler (or reuse its finished run, or resume it): its wall seconds, None where not all are known."""
    folder = os.path.join(out, name)
    done = os.path.join(folder, "seconds.json")  # written after a finished run: its wall time and what it ran
    ran = {"config": config, "extra": extra, "threads": threads, "targets": len(os.listdir(targets))}
    finished = json.loads(Path(done).read_text()) if reuse and os.path.exists(done) else {}
    if finished and {k: v for k, v in finished.items() if k != "wall"} == ran:
        wall = finished["wall"]
        print(f"[equal_compute] {name}: reusing the finished run in {folder}", flush=True)
    else:  # with reuse, an unfinished run of it resumes (the writer checks that its config is the same)
        resumed = reuse and os.path.exists(os.path.join(folder, "metrics.jsonl"))
        start = time.perf_counter()
        run(["predict", "--config", config, "--data.init_args.images", targets, "--data.init_args.limit", "null",
             "--model.init_args.samples_per_target", "4", "--model.init_args.progress", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", folder, "--writer.overwrite",
             str(not reuse).lower(), "--threads", str(threads), *extra])
        wall = None if resumed else time.perf_counter() - start  # a resumed run's seconds are not all known
        with open(done, "w") as f:
            json.dump(ran | {"wall": wall}, f)
    return wall


def row(name: str, config: str, folder: str, wall: float | None, only: set[str] | None = None) -> dict:
    """A sampler's table row from its run folder (``only``: those targets alone)."""
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        lines = [line for line in map(json.loads, f) if only is None or line["id"] in only]
    best = best_per_target(lines)
    scored = [b for b in best if b["cosine"] is not None]
    cos = [b["cosine"] for b in scored]
    per_target = lambda key: sum(line[key] for line in lines) / len(best)  # noqa: E731
    paths = [os.path.join(folder, b["image"]) for b in scored]
    return {"sampler": name, "targets": len(best), "failed": len(best) - len(scored),
            "forward": per_target("nfe"), "backward": per_target("unet_backward"),
            "s_per_target": None if wall is None else wall / len(best),
            "best_mean": statistics.mean(cos), "best_worst": min(cos),
            "below": sum(c < FAIL for c in cos) + len(best) - len(scored),
            "all_mean": statistics.mean(line["cosine"] for line in lines if line.get("cosine") is not None),
            "agreement": agreement(scored, folder, VIT), **of_images(config, paths),
            "spread": saved_spread(lines, folder), "per_target": {b["id"]: b["cosine"] for b in best}}


def saved_spread(lines: list[dict], folder: str) -> float:
    """The RMS pixel distance between two saved generations of a target (as saved, 8-bit PNG), averaged over the
    targets with two or more."""
    import torch
    from lit_featinv.runs import load_image
    groups = collections.defaultdict(list)
    for line in lines:
        if line.get("status", "ok") == "ok" and line.get("image"):
            groups[line["id"]].append(load_image(os.path.join(folder, line["image"])))
    return statistics.mean(float(pairwise(torch.stack(g)[None])[0]) for g in groups.values() if len(g) > 1)


def seconds(row: dict) -> str:
    """Seconds per target, or '-' for a run resumed in another process (its earlier seconds are not known)."""
    return "-" if row["s_per_target"] is None else f"{row['s_per_target']:.1f}"


def write(out: str, rows: list[dict], threads: int, note: str = "") -> None:
    lines = [f"Command: python benchmarks/equal_compute.py {shlex.join(sys.argv[1:])}", "",
             f"torch threads: {threads}", "", *([note, ""] if note else []),
             "| sampler | targets | UNet forward / target | backward / target | s / target | best cosine: mean | worst "
             f"| targets below {FAIL} | other classifier agrees (best) | prior score median (best) | KID x 1000 (best) "
             "| cosine mean (every saved) | spread of the saved (pairwise RMS) |", "|" + " --- |" * 13]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['targets']} | {r['forward']:.0f} | {r['backward']:.0f} "
                     f"| {seconds(r)} | {r['best_mean']:.4f} | {r['best_worst']:.4f} | {r['below']} "
                     f"| {100 * r['agreement']:.0f}% | {r['prior_score_median']:.4f} | {r['kid']:.2f} "
                     f"| {r['all_mean']:.4f} | {r['spread']:.4f} |")
    ids = list(rows[0]["per_target"])
    lines += ["", "Best cosine per target:", "", "| target | " + " | ".join(r["sampler"] for r in rows) + " |",
              "|" + " --- |" * (len(rows) + 1)]
    cell = lambda c: "failed" if c is None else f"{c:.4f}"  # noqa: E731
    lines += [f"| {i} | " + " | ".join(cell(r["per_target"].get(i)) for r in rows) + " |" for i in ids]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=64, help="first N Fashion-MNIST test images")
    p.add_argument("--out", default="runs/equal_compute")
    p.add_argument("--sampler", action="append", default=[], metavar="NAME=CONFIG[:OVERRIDES]",
                   help="a sampler by its config and CLI overrides (default: preset and particles)")
    p.add_argument("--only", default="", metavar="I,J,...",
                   help="only these test images (indices; a screen on chosen targets, e.g. the hardest), not the first N")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of every run (the same for all)")
    p.add_argument("--reuse", action="store_true", help="read a sampler's finished run in --out (the same config, "
                                                         "overrides, threads and targets) instead of running it again")
    p.add_argument("--tabulate", action="store_true", help="run nothing: the table of the run folders in --out as "
                                                           "they stand, over the targets every sampler has finished")
    a = p.parse_args()
    specs = [(s.partition("=")[0], *s.partition("=")[2].partition(":")[::2]) for s in a.sampler]
    specs = specs or [(name, config, "") for name, config in SAMPLERS.items()]
    if a.tabulate:
        folders = [os.path.join(a.out, name) for name, _, _ in specs]
        only = set.intersection(*map(finished_targets, folders))
        rows = [row(name, config, folder, None, only) for (name, config, _), folder in zip(specs, folders)]
        write(a.out, rows, a.threads, note=f"Tabulated as the runs stood (--tabulate), over the targets every sampler "
                                           f"had finished: {len(only)}; seconds not known ('-').")
        return print(open(os.path.join(a.out, "results.md")).read())
    targets = os.path.join(a.out, "targets")
    export(targets, a.count, indices=[int(i) for i in a.only.split(",")] if a.only else None)
    rows = []
    for name, config, extra in specs:
        rows.append(measure(name, config, shlex.split(extra), targets, a.out, a.threads, a.reuse))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_target"}), flush=True)
        write(a.out, rows, a.threads)


if __name__ == "__main__":
    main()
