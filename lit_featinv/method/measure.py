"""Measurement: a generation's match is always taken on the image as it will be saved (clamped, 8-bit) with float32
features, whatever the Trainer's precision; so are best-image candidates and every reported metric."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .records import BestImage


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] float in [0, 1] -> uint8, exactly as it is stored in an 8-bit PNG."""
    return images01.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def cosine(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine of features to their targets; NaN for an all-zero target, which has no direction."""
    target = target.float()
    return F.cosine_similarity(features.float(), target, dim=1).masked_fill(target.norm(dim=1) == 0, math.nan)


def match_metrics(features: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample cosine, squared L2 and relative L2 (||f - f*|| / ||f*||) of features to their targets; the cosine
    and the relative L2 to an all-zero target are undefined (NaN)."""
    features, target = features.float(), target.float()
    sq, norm = (features - target).pow(2).sum(1), target.norm(dim=1)
    return {"cosine": cosine(features, target), "sq_l2": sq,
            "rel_l2": (sq.sqrt() / norm.clamp_min(1e-12)).masked_fill(norm == 0, math.nan)}


@torch.no_grad()
def measure_saved(extractor, loss, saved: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (as saved) -> their features (``extractor.measure``) and each one's loss (``loss.image_loss``) to
    its target, in float32 under any precision."""
    with torch.autocast(saved.device.type, enabled=False):
        features = extractor.measure(saved.float() / 255)
        return features, loss.image_loss(features, target.float())


@torch.no_grad()
def score(extractor, loss, images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Images in [0, 1] -> (uint8 images as they will be saved, their float32 loss to the target, their features)."""
    saved = to_uint8(images)
    features, value = measure_saved(extractor, loss, saved, target)
    return saved, value, features


@torch.no_grad()
def metrics(extractor, loss, saved: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Match of uint8 images (as saved) to their targets (:func:`match_metrics`) and their ``loss``."""
    features, value = measure_saved(extractor, loss, saved, target)
    return match_metrics(features, target.float()) | {"loss": value}


def track_best(extractor, loss, best: BestImage, candidates: list[torch.Tensor], target: torch.Tensor, step: int,
               rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score candidate images [B, ...] (earliest first) as saved in one extractor call and keep each sample's best;
    returns the first candidate's loss and cosine to the target."""
    saved, value, features = score(extractor, loss, torch.cat(candidates), target.repeat(len(candidates), 1))
    for image, each in zip(saved.chunk(len(candidates)), value.chunk(len(candidates))):
        best.update(image, each, step, rows)
    return value[: len(target)], cosine(features[: len(target)], target)
