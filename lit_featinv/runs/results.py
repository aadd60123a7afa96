"""What a Python call returns (:class:`Inversion`): ``predict_step``'s records as images and metrics per generation,
as the writer would save them."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .images import pil


@dataclass
class Inversion:
    """What a call returns, one entry per generation (target by target, ``samples_per_target`` each):

    - ``images``: the final images as saved (8-bit): PIL images, or with ``output_type="pt"`` a float tensor
      [N, C, H, W] in [0, 1]; a generation that failed (NaN/Inf) is None (``"pt"``: NaN);
    - ``best_images``: the best image of each generation (see ``model.best_from_guided``), alike;
    - ``metrics``: per generation ``id``, ``sample``, ``seed``, ``status`` and its metrics (``cosine``, ``rel_l2``,
      ``loss``, ``best_*``, ...: as in ``metrics.jsonl``);
    - ``records``: ``predict_step``'s records (with trajectories), as the writer receives them.
    """
    images: list | torch.Tensor
    best_images: list | torch.Tensor
    metrics: list[dict]
    records: list[dict] = field(repr=False)


def check_output_type(output_type: str) -> None:
    if output_type not in ("pil", "pt"):
        raise ConfigError("output_type", f"{output_type!r}: give 'pil' or 'pt'")


def inversion(records: list[dict], output_type: str = "pil") -> Inversion:
    """``predict_step`` records -> an :class:`Inversion` (``output_type``: ``"pil"`` or ``"pt"``)."""
    check_output_type(output_type)

    def images(key: str):
        found = [r.get(key) for r in records]
        if output_type == "pil":
            return [None if image is None else pil(image) for image in found]
        like = next((image for image in found if image is not None), None)
        if like is None:
            return torch.empty(0)
        return torch.stack([torch.full(like.shape, float("nan")) if image is None else image.float() / 255
                            for image in found])

    metrics = [{k: r[k] for k in ("id", "sample", "seed", "status") if k in r} | r.get("metrics", {}) for r in records]
    return Inversion(images("image"), images("best_image"), metrics, records)

