"""Naturalness of generated images beside their cosine (issue 22): the prior's own score and a kernel distance to
real images.

- ``prior_score``: from the run's metrics lines (on by default; lower is more typical of the prior): the median and
  the worst decile (90th percentile).
- KID: the kernel inception distance (Binkowski et al., 2018: unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x . y / d + 1)^3) between the zoo ViT's pooled features of the images and of real Fashion-MNIST test
  images (items 1000-1999 by default: no benchmark target is among them), x 1000; 0 for images like the real ones.
  The features are standardised per dimension by the real images' mean and std first (the ViT's raw features are
  large, and the cubic kernel of large features makes the estimate very noisy at 64 images).

    python benchmarks/naturalness.py RUN_DIR [RUN_DIR ...]   # one line per run
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist import export  # noqa: E402

from lit_featinv import TimmExtractor  # noqa: E402
from lit_featinv.runs import load_image  # noqa: E402

VIT = "local-dir:assets/zoo/fmnist-vit-tiny"
REFERENCE = (1000, 1000)  # (offset, count) of the real test images KID compares with


def kid(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between feature sets x [m, d] and y [n, d] (the reference) with k(a, b) = (a . b / d + 1)^3,
    on features standardised by y's mean and std."""
    x, y = x.double(), y.double()
    mean, std = y.mean(0), y.std(0).clamp_min(1e-8)
    x, y = (x - mean) / std, (y - mean) / std
    d, m, n = x.shape[1], len(x), len(y)
    kernel = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    return float((kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diag().sum()) / (n * (n - 1))
                 - 2 * kxy.mean())


@torch.no_grad()
def features(paths: list[str], network: str = VIT, batch: int = 256) -> torch.Tensor:
    """The pooled pre-classifier features of ``network`` for image files."""
    ext = TimmExtractor(network).eval()
    return torch.cat([ext(torch.stack([load_image(p) for p in paths[i: i + batch]]))
                      for i in range(0, len(paths), batch)])


_reference: dict[str, torch.Tensor] = {}


def reference_features(folder: str) -> torch.Tensor:
    """The ViT features of the real reference images (exported to ``folder`` once, kept for the process)."""
    if folder not in _reference:
        _reference[folder] = features(export(folder, REFERENCE[1], REFERENCE[0]))
    return _reference[folder]


def naturalness(run: str, reference: str = "runs/kid-reference", image_key: str = "image") -> dict:
    """``prior_score`` median and worst decile from ``run``'s metrics lines, and KID x 1000 of its images (or, with
    ``image_key="target_image"``, of its targets) to the real reference images."""
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    scores = [r["prior_score"] for r in rows if r.get("prior_score") is not None]
    paths = [p if os.path.isabs(p) else os.path.join(run, p) for p in (r[image_key] for r in rows)]
    return summary(scores, paths, reference)


def summary(scores: list[float], paths: list[str], reference: str) -> dict:
    scores = sorted(scores)
    return {"prior_score_median": statistics.median(scores) if scores else None,
            "prior_score_p90": scores[min(len(scores) - 1, int(0.9 * len(scores)))] if scores else None,
            "kid": 1000 * kid(features(paths), reference_features(reference))}


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(json.dumps({"run": folder, **naturalness(folder)}))


def prior_scores(config: str, paths: list[str]) -> list[float]:
    """The prior score (as a run records it) of image files, with the prior and ``prior_score`` of ``config``."""
    return scores_of(config, torch.stack([load_image(p) for p in paths]))


@functools.lru_cache(maxsize=None)
def scorer(config: str):
    """``config``'s decoder, built once: its ``prior`` and ``prior_score``."""
    from lit_featinv import FeatureInversion
    return FeatureInversion.from_config(config)


@torch.no_grad()
def scores_of(config: str, images: torch.Tensor, batch: int = 256) -> list[float]:
    """The prior score of images [N, C, H, W] in [0, 1] (rounded to 8 bits, as saved), with ``config``'s prior."""
    decoder = scorer(config)
    images = images.mul(255).round().to(torch.uint8)
    score = lambda part: decoder.prior_score(decoder.prior, part).tolist()  # noqa: E731
    return [s for i in range(0, len(images), batch) for s in score(images[i: i + batch])]


def of_images(config: str, paths: list[str], reference: str = "runs/kid-reference") -> dict:
    """:func:`naturalness` of image files that are not a run's (e.g. the real targets), with ``config``'s prior."""
    return summary(prior_scores(config, paths), paths, reference)
