"""Export Fashion-MNIST test items as 32x32 grayscale PNGs (28x28 zero-padded by 2, the zoo's input space).

Source: Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
Run: python benchmarks/fmnist.py OUT_DIR [--count 64] [--offset 0]
"""
from __future__ import annotations

import argparse
import gzip
import os

import numpy as np
from PIL import Image

DATA = "/usr/share/datasets/fashion-mnist"
LABELS = ["tshirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def read_idx(name: str, data: str = DATA) -> np.ndarray:
    path = os.path.join(data, name)
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: apt-get install dataset-fashion-mnist")
    with gzip.open(path) as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, offset=8 if "labels" in name else 16)


def export(out_dir: str, count: int = 64, offset: int = 0, data: str = DATA,
           indices: list[int] | None = None) -> list[str]:
    """Write test items offset..offset+count-1 (or those ``indices``) as ``NNNNN_label.png``; returns their paths."""
    images = read_idx("t10k-images-idx3-ubyte.gz", data).reshape(-1, 28, 28)
    labels = read_idx("t10k-labels-idx1-ubyte.gz", data)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(offset, offset + count) if indices is None else indices:
        path = os.path.join(out_dir, f"{i:05d}_{LABELS[labels[i]]}.png")
        Image.fromarray(np.pad(images[i], 2)).save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--offset", type=int, default=0)
    a = p.parse_args()
    print(f"wrote {len(export(a.out_dir, a.count, a.offset))} images to {a.out_dir}")
