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


# ---- where generations vary more or less than a reference sample -------------------------------------------------
CLOSE = (0.8, 1.25)  # ratios within this range read as "about as much as the reference"


def regions(height: int, width: int) -> dict[str, torch.Tensor]:
    """Masks [H, W] of a small fixed set of regions: the halves, the centre (the middle half of each side), the
    border around it, and the whole image; an odd side's middle row or column is in neither half."""
    y = (torch.arange(height, dtype=torch.float64) + 0.5)[:, None].expand(height, width) / height
    x = (torch.arange(width, dtype=torch.float64) + 0.5)[None, :].expand(height, width) / width
    centre = ((y - 0.5).abs() < 0.25) & ((x - 0.5).abs() < 0.25)
    return {"left half": x < 0.5, "right half": x > 0.5, "top half": y < 0.5, "bottom half": y > 0.5,
            "centre": centre, "border": ~centre, "whole image": torch.ones(height, width, dtype=torch.bool)}


def region_ratios(std: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Per region of :func:`regions`, the mean of a std map [H, W] over the reference's ([H', W']; the regions are
    fractions of each map, so the sizes may differ); a region empty in either map is left out, and a region where the
    reference does not vary at all is 1 (neither varies) or inf."""
    ours, theirs = regions(*std.shape), regions(*reference.shape)
    out = {}
    for name, mask in ours.items():
        if mask.any() and theirs[name].any():
            a, b = std.double()[mask].mean().item(), reference.double()[theirs[name]].mean().item()
            out[name] = a / b if b > 0 else (1.0 if a == 0 else math.inf)
    return out


def times(ratio: float) -> str:
    """A ratio as "1.8x" (two significant digits below 0.1, none from 10)."""
    if math.isinf(ratio):
        return "∞x"
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x" if ratio >= 0.1 else f"{ratio:.2f}x"


def extremes(ratios: dict[str, float]) -> tuple[tuple[str, float], tuple[str, float]]:
    """The region with the largest ratio and the one with the smallest (the whole image aside), as (name, ratio)."""
    parts = {name: r for name, r in ratios.items() if name != "whole image"} or ratios
    most, least = max(parts, key=parts.get), min(parts, key=parts.get)
    return (most, parts[most]), (least, parts[least])


def against_reference(std: torch.Tensor, reference: torch.Tensor) -> str:
    """One line: where a std map varies more and less than a reference's, e.g. "varies 1.8x the reference in the
    right half, 0.6x in the left half; 1.1x overall"."""
    ratios = region_ratios(std, reference)
    overall = f"; {times(ratios['whole image'])} overall"
    if all(CLOSE[0] <= r <= CLOSE[1] for r in ratios.values()):
        return f"varies about as much as the reference (within {CLOSE[0]}x-{CLOSE[1]}x) everywhere{overall}"
    (most, high), (least, low) = extremes(ratios)
    if math.isinf(high):  # the reference is fixed there (a feature that sees it exactly)
        mask = regions(*std.shape)[most]
        rest = "" if math.isinf(low) else f", {times(low)} in the {least}"
        return (f"varies in the {most}, where the reference does not (mean std {std.double()[mask].mean():.3f})"
                f"{rest}{overall}")
    if times(high) == times(low):
        return f"varies {times(high)} the reference everywhere"
    return f"varies {times(high)} the reference in the {most}, {times(low)} in the {least}{overall}"
