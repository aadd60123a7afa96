"""The best cosine so far along each generation's trajectory, at given steps: what a shorter run would have kept.

    python benchmarks/best_so_far.py RUN_FOLDER [RUN_FOLDER ...] [--steps 10,25,50]

For noise optimisation (``model.sampler: NoiseOptimization``) a run with N Adam steps passes the same noises as the
first N + 1 passes of a longer run with the same seeds (the optimisation is deterministic), so the best over those
passes of the longer run's ``trajectories.jsonl`` is the shorter run's best image (on the trajectory's cosine, of the
image as saved). Prints, per folder and step count, the mean and worst over generations as a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def best_so_far(trajectories: list[dict], steps: int) -> list[float]:
    """Per generation, its highest cosine over trajectory entries with step <= ``steps``."""
    return [max(c for s, c in zip(t["step"], t["cosine"]) if s <= steps and c is not None) for t in trajectories]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--steps", default="10,17,25,30,34,50")
    a = p.parse_args(argv)
    counts = [int(s) for s in a.steps.split(",")]
    print("| run | " + " | ".join(f"{n} steps: mean / worst" for n in counts) + " |")
    print("|" + " --- |" * (len(counts) + 1))
    for folder in a.folders:
        trajectories = [json.loads(line) for line in (folder / "trajectories.jsonl").read_text().splitlines()]
        cells = []
        for n in counts:
            if max(t["step"][-1] for t in trajectories) < n:
                cells.append("-")
                continue
            best = best_so_far(trajectories, n)
            cells.append(f"{statistics.mean(best):.4f} / {min(best):.4f}")
        print(f"| {folder.name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
