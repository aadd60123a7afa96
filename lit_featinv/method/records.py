"""What the guided loop's callbacks keep per sample: the best image so far and the trajectory (loss and cosine to
the target at every guided iteration)."""
from __future__ import annotations

import math

import torch

TRAJECTORY_FORMAT = "lit_featinv.trajectory/1"


def defined(value: float) -> float | None:
    """A number as JSON takes it: None (null) where it is undefined (NaN; e.g. the cosine to an all-zero target)."""
    return None if math.isnan(value) else value


class BestImage:
    """Per sample, the image (uint8, as it will be saved) with the smallest loss seen so far and its step; ties keep
    the earlier image, as the authors' code does. ``rows``: which samples of the batch the update is for."""

    def __init__(self):
        self.image = self.loss = self.step = None

    def update(self, image: torch.Tensor, loss: torch.Tensor, step: int, rows: torch.Tensor) -> None:
        if self.image is None:
            self.image, self.loss, self.step = image, loss, torch.full(loss.shape, step, device=loss.device)
            return
        before = self.loss[rows]
        better = (loss < before) | (before.isnan() & ~loss.isnan())  # a NaN loss (a broken estimate) never stays best
        self.image[rows] = torch.where(better.view(-1, *[1] * (image.ndim - 1)), image, self.image[rows])
        self.loss[rows] = torch.where(better, loss, self.loss[rows])
        self.step[rows] = torch.where(better, torch.full_like(self.step[rows], step), self.step[rows])

    def take(self, parents: torch.Tensor) -> None:
        """Each sample takes the best image of sample ``parents[i]`` (resampled particles inherit their lineage's)."""
        if self.image is not None:
            self.image, self.loss, self.step = self.image[parents], self.loss[parents], self.step[parents]


class Trajectory:
    """Per sample, (step, recurrence iteration k, loss, cosine) of the clean estimate (as saved) at every guided
    iteration it took part in, and of its final image (step = number of steps). Kept on the device until
    :meth:`per_sample`."""

    def __init__(self, size: int):
        self.size, self.entries = size, []

    def add(self, step: int, k: int, rows: torch.Tensor, loss: torch.Tensor, cosine: torch.Tensor) -> None:
        self.entries.append((step, k, rows, loss.detach().float().clone(), cosine.detach().float().clone()))

    def per_sample(self) -> list[dict]:
        """One dict of lists (``step``, ``k``, ``loss``, ``cosine``) per sample, in iteration order."""
        out = [{"step": [], "k": [], "loss": [], "cosine": []} for _ in range(self.size)]
        for step, k, rows, loss, cosine in self.entries:
            for r, value, cos in zip(rows.tolist(), loss.tolist(), cosine.tolist()):
                record = out[r]
                record["step"].append(step)
                record["k"].append(k)
                record["loss"].append(defined(float(f"{value:.9g}")))  # float32, exactly
                record["cosine"].append(defined(round(cos, 6)))
        return out
