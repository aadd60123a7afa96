"""Distances between generated features f(x) [B, D] and targets f* [B, D], one value per sample."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class FeatureLoss:
    """Base class: ``loss(features, target) -> [B]``, minimised by the guidance."""

    def __call__(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SquaredL2(FeatureLoss):
    """||f(x) - f*||^2 on raw features (the paper's loss)."""

    def __call__(self, features, target):
        return (features.float() - target.float()).pow(2).sum(1)


class CosineDistance(FeatureLoss):
    """1 - cos(f(x), f*): matches the direction only."""

    def __call__(self, features, target):
        return 1 - F.cosine_similarity(features.float(), target.float(), dim=1)


def match_metrics(features: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample cosine, squared L2 and relative L2 (||f - f*|| / ||f*||) of features to their targets."""
    features, target = features.float(), target.float()
    sq = (features - target).pow(2).sum(1)
    return {"cosine": F.cosine_similarity(features, target, dim=1), "sq_l2": sq,
            "rel_l2": sq.sqrt() / target.norm(dim=1).clamp_min(1e-12)}
