"""Compare two run folders generation by generation: are the PNGs bit-identical, and how far apart are the
reported cosines and the pixels where they are not.

    python benchmarks/compare_runs.py runs/a runs/b
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def rows(folder: Path) -> dict:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return {(r["id"], r["sample"]): r for r in map(json.loads, lines)}


def compare(a: Path, b: Path) -> str:
    ra, rb = rows(a), rows(b)
    keys = sorted(ra.keys() & rb.keys())
    same = sum((a / ra[k]["image"]).read_bytes() == (b / rb[k]["image"]).read_bytes() for k in keys)
    dcos = [abs(ra[k]["cosine"] - rb[k]["cosine"]) for k in keys]
    dpix = [np.abs(np.asarray(Image.open(a / ra[k]["image"]), dtype=int)
                   - np.asarray(Image.open(b / rb[k]["image"]), dtype=int)).mean() for k in keys]
    mean = lambda key, r: np.mean([r[k][key] for k in keys])  # noqa: E731
    return (f"{len(keys)} generations in both ({len(ra)} / {len(rb)}); PNGs bit-identical: {same}; "
            f"|cosine a - b|: max {max(dcos):.4f}, mean {np.mean(dcos):.4f}; mean |pixel a - b| (0..255): "
            f"max {max(dpix):.1f}, mean {np.mean(dpix):.1f}; cosine mean a {mean('cosine', ra):.4f}, "
            f"b {mean('cosine', rb):.4f}")


if __name__ == "__main__":
    print(compare(Path(sys.argv[1]), Path(sys.argv[2])))
