"""The Python call: a decoder built from a preset, a config file or a dict (:func:`build`), targets from what a
caller has in memory (:func:`target_items`), and what a call returns (:class:`Inversion`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from . import presets
from .data import feature_items, image_items, load_item, prompt_items
from .errors import ConfigError
from .loading import import_object, instantiate
from .images import from_pil, pil


def build(config: str | os.PathLike | dict, overrides: dict, base: type):
    """The ``model`` section of a config (a preset name, a YAML file or a dict) as an instance of ``base`` (a
    subclass of its ``class_path``: the subclass) or of its ``class_path``; ``overrides`` replace keys of its
    ``init_args``."""
    whole = presets.load(str(config), "config") if isinstance(config, (str, os.PathLike)) else dict(config)
    section = whole.get("model", whole)  # a whole config or only its model section
    if not isinstance(section, dict) or "class_path" not in section:
        raise ConfigError("config", "needs a model section with class_path and init_args (as the presets have)")
    section = {**section, "init_args": {**(section.get("init_args") or {}), **overrides}}
    named = import_object(section["class_path"], "lit_featinv")
    if isinstance(named, type) and issubclass(base, named):  # a subclass built from its base's config
        section["class_path"] = f"{base.__module__}.{base.__qualname__}"
    return instantiate(section, base)


def target_items(images=None, features=None, prompts=None, feature_dim: int | None = None) -> list[dict]:
    """Targets from exactly one of: ``images`` (a file or folder path, a PIL image, a tensor [C, H, W] or
    [B, C, H, W] in [0, 1] (uint8: 0..255), or a list of these of one size), ``features`` (a tensor or array [D] or
    [N, D], or a ``.pt``/``.npy`` path) or ``prompts`` (a text or a list). Bad input: one line naming the argument."""
    given = [name for name, value in (("images", images), ("features", features), ("prompts", prompts))
             if value is not None]
    if len(given) != 1:
        raise ConfigError(" and ".join(given) or "images", "give exactly one of images, features or prompts")
    if prompts is not None:
        return prompt_items([prompts] if isinstance(prompts, str) else list(prompts), "prompts")
    if features is not None:
        return feature_targets(features, feature_dim)
    return image_targets(images)


def image_targets(images) -> list[dict]:
    if isinstance(images, (str, os.PathLike)):
        items = [load_item(item) for item in image_items(images, "images")]
        bad = [item for item in items if item.get("error")]
        if bad:
            raise ConfigError("images", f"{bad[0]['source']}: {bad[0]['error']}")
        return items
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    listed = images if isinstance(images, (list, tuple)) else [images]
    if not listed:
        raise ConfigError("images", "an empty list")
    tensors = [as_image(image, f"images[{n}]" if len(listed) > 1 else "images") for n, image in enumerate(listed)]
    sizes = sorted({tuple(t.shape[1:]) for t in tensors})
    if len(sizes) > 1:
        raise ConfigError("images", "the list mixes sizes (" + ", ".join(f"{h}x{w}" for h, w in sizes) + "): give "
                                    "images of one size, or a folder path (its images may differ)")
    return [{"id": f"image_{n:05d}", "source": f"images[{n}]", "feature": None, "image": t}
            for n, t in enumerate(tensors)]


def as_image(image, key: str) -> torch.Tensor:
    """A PIL image, a path or a tensor [C, H, W] -> float [C, H, W] in [0, 1] (C = 1 or 3)."""
    if isinstance(image, (str, os.PathLike)):
        return image_targets(image)[0]["image"]
    if isinstance(image, Image.Image):
        return from_pil(image)
    if not isinstance(image, torch.Tensor):
        raise ConfigError(key, f"a {type(image).__name__}: give a path, a PIL image or a tensor [C, H, W]")
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ConfigError(key, f"a tensor of shape {list(image.shape)}: give [C, H, W] or [B, C, H, W] with C = 1 "
                               f"or 3 (channels first)")
    if image.dtype == torch.uint8:
        return image.float() / 255
    image = image.detach().float().cpu()
    if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ConfigError(key, f"values in [{image.min():.3g}, {image.max():.3g}]: give images in [0, 1] "
                               f"(from [-1, 1]: (x + 1) / 2; from 0..255: a uint8 tensor or x / 255)")
    return image.clone()


def feature_targets(features, feature_dim: int | None) -> list[dict]:
    if isinstance(features, (str, os.PathLike)):
        items = feature_items(features, "features")
    else:
        if not isinstance(features, (torch.Tensor, np.ndarray)):
            raise ConfigError("features", f"a {type(features).__name__}: give a tensor or array [D] or [N, D], or a "
                                          f".pt/.npy path")
        data = torch.as_tensor(features).detach().float().cpu().clone()
        if data.ndim not in (1, 2) or data.numel() == 0:
            raise ConfigError("features", f"shape {list(data.shape)}: give [D] or [N, D]")
        if not torch.isfinite(data).all():
            raise ConfigError("features", "contains NaN or Inf")
        items = [{"id": f"feature_{n:05d}", "source": f"features[{n}]", "feature": row}
                 for n, row in enumerate(data.view(-1, data.shape[-1]))]
    if feature_dim is not None and items[0]["feature"].numel() != feature_dim:
        raise ConfigError("features", f"{items[0]['feature'].numel()} values per target, but the extractor "
                                      f"(model.extractor) gives {feature_dim}")
    return [{**item, "image": None} for item in items]


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

