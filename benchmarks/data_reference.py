"""The data posterior for ``benchmarks/invariances.py``: each target's nearest real images by a feature's own distance.

For a feature f (a module of ``invariant_features.py``, built through ``lit_featinv.ModuleExtractor`` from
``invariant_features.extractor_config`` as the inversion builds it), a target's data neighbours are the k training
images x with the smallest Euclidean distance ||f(x) - f(target)|| between the float32 features the inversion
matches (``extractor.measure``), a training image identical in pixels to the target excluded. They sample what the
data says an image with (nearly) the target's feature looks like, so how much a factor varies among them is how
much it should vary among the feature's generations.

The training set is an idx file (Fashion-MNIST's ``train-images-idx3-ubyte.gz``: 60,000 items, 28 x 28, 8-bit), each
item padded by 2 zero pixels on every side to 32 x 32 as the zoo and ``assets/fmnist-test32`` are (values in
[0, 1], background 0). Its features are computed once per feature in batches and cached as OUT/data/FEATURE-KEY.pt,
KEY a hash of the feature, its settings (the blur sigma), the zoo weights and the training file.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import time

import torch
import torch.nn.functional as F

import invariant_features as inv

TRAIN = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
IDX_TYPES = {0x08: torch.uint8}  # the idx dtype codes read here (Fashion-MNIST's images and labels are 8-bit)


# ---- the training set ---------------------------------------------------------------------------------------------
def read_idx(path: str) -> torch.Tensor:
    """An idx file (gzipped when its name ends in .gz) -> a tensor of the shape its header gives."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an 8-bit idx file (magic {raw[:4].hex()})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    body = raw[4 + 4 * len(dims):]
    if len(body) != (count := math.prod(dims)):
        raise ValueError(f"{path}: {len(body)} bytes of data, the header {dims} says {count}")
    return torch.frombuffer(bytearray(body), dtype=IDX_TYPES[raw[2]]).reshape(dims)


def write_idx(path: str, images: torch.Tensor) -> None:
    """uint8 images [n, H, W] -> an idx file (gzipped when its name ends in .gz): the inverse of :func:`read_idx`."""
    header = bytes([0, 0, 0x08, images.ndim]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    with (gzip.open if path.endswith(".gz") else open)(path, "wb") as f:
        f.write(header + images.to(torch.uint8).contiguous().numpy().tobytes())


def pad(images: torch.Tensor) -> torch.Tensor:
    """28 x 28 images [n, 28, 28] -> [n, 1, 32, 32], 2 zero (background) pixels on each side, as the zoo's."""
    return F.pad(images, (2, 2, 2, 2))[:, None]


def load_train(path: str) -> torch.Tensor:
    """The training images of idx file ``path`` (28 x 28, 8-bit) as uint8 [n, 1, 32, 32], padded (:func:`pad`)."""
    images = read_idx(path)
    if images.shape[1:] != (28, 28):
        raise SystemExit(f"invariances: --train {path}: images of shape {list(images.shape[1:])}, not 28 x 28")
    return pad(images)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> uint8, as an 8-bit PNG stores them."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def identical(targets: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Which training images (uint8 [n, 1, H, W]) equal each target ([N, 1, H, W] in [0, 1]) in every pixel: [N, n]."""
    pool = train.flatten(1)
    return torch.stack([(pool == t).all(1) for t in to_uint8(targets).flatten(1)])


# ---- features -----------------------------------------------------------------------------------------------------
def init_args(feature: str, sigma: float) -> dict | None:
    """The feature module's arguments, as ``invariances.decoder`` gives them (the blur's sigma)."""
    return {"sigma": sigma} if feature == "blurred" else None


def extractor(feature: str, sigma: float):
    """Feature ``feature``'s ``ModuleExtractor``, built from ``inv.extractor_config`` as the inversion builds it."""
    from lit_featinv import ModuleExtractor
    args = inv.extractor_config(feature, init_args(feature, sigma))["init_args"]
    module = inv.FEATURES[feature](**args["module"].get("init_args", {}))
    return ModuleExtractor(module, weights=args["weights"], preprocess=args["preprocess"])


@functools.lru_cache(maxsize=None)
def file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def cache_path(folder: str, feature: str, sigma: float, train: str) -> str:
    """OUT/data/FEATURE-KEY.pt, KEY a hash of the feature's settings, the zoo weights and the training file."""
    settings = {"feature": feature, "init_args": init_args(feature, sigma), "weights": file_hash(inv.WEIGHTS),
                "train": file_hash(train)}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(folder, f"{feature}-{key}.pt")


@torch.no_grad()
def features(ext, images: torch.Tensor, batch: int = 1000, label: str = "") -> torch.Tensor:
    """Float32 features [n, D] of uint8 images [n, 1, H, W] in batches (``ext.measure`` on images / 255)."""
    out, begun = [], time.perf_counter()
    for start in range(0, len(images), batch):
        out.append(ext.measure(images[start: start + batch].float() / 255))
        done = start + len(out[-1])
        if label and (done % (10 * batch) == 0 or done == len(images)):
            print(f"invariances: data: {label}: features of {done} of {len(images)} training images "
                  f"({time.perf_counter() - begun:.0f} s)", flush=True)
    return torch.cat(out)


def train_features(feature: str, sigma: float, train: torch.Tensor, train_path: str, folder: str) -> torch.Tensor:
    """The training images' features [n, D] for ``feature``, read from or written to the cache in ``folder``."""
    path = cache_path(folder, feature, sigma, train_path)
    if os.path.exists(path):
        saved = torch.load(path)
        if saved.shape[0] == len(train):
            print(f"invariances: data: {feature}: reusing {path}", flush=True)
            return saved
    out = features(extractor(feature, sigma), train, label=feature)
    os.makedirs(folder, exist_ok=True)
    torch.save(out, path)
    return out


# ---- neighbours ---------------------------------------------------------------------------------------------------
def nearest(query: torch.Tensor, pool: torch.Tensor, k: int,
            exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices [N, k] and Euclidean distances [N, k] of each query's k nearest rows of ``pool`` [n, D], nearest
    first; ``exclude`` [N, n]: rows never returned for that query."""
    d = torch.stack([(pool - q).pow(2).sum(1).sqrt() for q in query.float()])  # exact differences, not cdist's mm
    if exclude is not None:
        d = d.masked_fill(exclude, torch.inf)
    if k > int((~d.isinf()).sum(1).min()):
        raise SystemExit(f"invariances: --neighbours {k}: the training set has fewer candidates")
    dist, index = d.topk(k, dim=1, largest=False, sorted=True)
    return index, dist


def neighbours(feature: str, targets: torch.Tensor, train: torch.Tensor, pool: torch.Tensor, k: int,
               sigma: float) -> dict:
    """Feature ``feature``'s k nearest training images to each target: images [N, k, 1, H, W] in [0, 1], their
    indices, feature distances and cosines to the target's feature [N, k]."""
    target = extractor(feature, sigma).measure(targets)
    index, dist = nearest(target, pool, k, identical(targets, train))
    cos = F.cosine_similarity(pool[index], target[:, None], dim=-1)
    return {"images": train[index].float() / 255, "index": index, "distance": dist, "cosine": cos}


def reference(names: list[str], targets: torch.Tensor, a) -> dict:
    """Each feature in ``names``: its data neighbours of the targets (``a``: the benchmark's options: train,
    neighbours, sigma, out), with the seconds it took and the training set's size."""
    begun = time.perf_counter()
    train = load_train(a.train)
    print(f"invariances: data: {len(train)} training images from {a.train}", flush=True)
    out = {}
    for feature in names:
        pool = train_features(feature, a.sigma, train, a.train, os.path.join(a.out, "data"))
        out[feature] = neighbours(feature, targets, train, pool, a.neighbours, a.sigma)
        cos = out[feature]["cosine"]
        print(f"invariances: data: {feature}: {a.neighbours} neighbours per target, cosine to target mean "
              f"{float(cos.mean()):.3f}, worst {float(cos.min()):.3f}", flush=True)
    return {"neighbours": out, "seconds": time.perf_counter() - begun, "count": len(train)}


# ---- figure -------------------------------------------------------------------------------------------------------
def data_figure(targets: torch.Tensor, sections: list[tuple[str, torch.Tensor, torch.Tensor]], path: str, rows: int,
                columns: int = 8, zoom: int = 2) -> None:
    """One section per feature (label, generations [N, G, 1, H, W], neighbours [N, k, 1, H, W]); in it a row per
    target: target | its first ``columns`` generations | its first ``columns`` data neighbours, nearest first."""
    from PIL import Image, ImageDraw
    n = min(rows, len(targets))
    tile, pad, gap, top = 32 * zoom, 1, 8, 14
    width = max(1 + min(columns, g.shape[1]) + min(columns, d.shape[1]) for _, g, d in sections) * (tile + pad)
    height = top + n * (tile + pad)
    sheet = Image.new("RGB", (width + 2 * gap, len(sections) * height), "white")
    draw = ImageDraw.Draw(sheet)
    for s, (label, gens, data) in enumerate(sections):
        y0 = s * height
        draw.text((1, y0 + 1), f"{label}: target | generations | data neighbours", fill="black")
        for i in range(n):
            x = 0
            for group in (targets[i: i + 1], gens[i, :columns], data[i, :columns]):
                for img in group:
                    tile_img = (img[0].clamp(0, 1) * 255).round().byte().numpy()
                    sheet.paste(Image.fromarray(tile_img, "L").resize((tile, tile), Image.NEAREST),
                                (x, y0 + top + i * (tile + pad)))
                    x += tile + pad
                x += gap
    sheet.save(path)
