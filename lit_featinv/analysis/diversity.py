"""What varies between the generations of one target: mean pairwise distance in pixel and feature space, and the
per-pixel standard deviation."""
from __future__ import annotations

import math

import torch


def upper_mean(matrix: torch.Tensor) -> float:
    """Mean of the entries above the diagonal of an [N, N] matrix: the mean over pairs."""
    i, j = torch.triu_indices(len(matrix), len(matrix), 1)
    return matrix[i, j].mean().item()


def pixel_diversity(images01: torch.Tensor) -> float:
    """Mean over pairs of images [N, C, H, W] in [0, 1] of their RMS difference."""
    flat = images01.flatten(1).double()
    return upper_mean(torch.cdist(flat, flat) / math.sqrt(flat.shape[1]))


def feature_diversity(features: torch.Tensor) -> float:
    """Mean over pairs of features [N, D] of 1 - their cosine."""
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    return upper_mean(1 - unit @ unit.T)


def std_map(images01: torch.Tensor) -> torch.Tensor:
    """Per pixel, the standard deviation across images [N, C, H, W] (over N, mean over channels): [H, W]."""
    return images01.double().std(0, correction=0).mean(0).float()


def variation(images01: list[torch.Tensor], extractors: dict[str, torch.nn.Module]) -> dict | None:
    """What varies between N >= 2 generations of one target: ``pixel`` (:func:`pixel_diversity`), per extractor name
    :func:`feature_diversity` of its features, ``std`` (:func:`std_map`); None for fewer images."""
    if len(images01) < 2:
        return None
    batch = torch.stack(images01)
    out = {"pixel": pixel_diversity(batch), "std": std_map(batch)}
    for name, extractor in extractors.items():
        out[name] = feature_diversity(extractor.measure(batch))
    return out
