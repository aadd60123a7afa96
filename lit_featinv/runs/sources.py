"""Target sources, each a list of items (``id``, ``source``, ``feature`` and what else its kind needs): image folders,
feature files, prompts and constructions' parts (:mod:`lit_featinv.method.constructions`), and what a Python caller
has in memory (:func:`target_items`). Images are found here and read when a target is loaded (:func:`load_item`)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import import_object
from ..errors import ConfigError
from ..method.constructions import Construction
from .images import from_pil, load_image

FEATURE_SUFFIXES = (".pt", ".pth", ".npy")


def require(root: Path, key: str, hint: str = "") -> Path:
    """``root``, which exists; else one line naming ``key`` (and ``hint``: what to do)."""
    if not root.exists():
        raise ConfigError(key, f"no such file or folder {str(root)!r} (cwd: {os.getcwd()}){hint}")
    return root


def _files(root: Path, key: str) -> list[Path]:
    if require(root, key).is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts))


def _sample_id(path: Path, root: Path) -> str:
    """Stable id: the path relative to the folder, without suffix, with '/' separators."""
    rel = path.name if root.is_file() else path.relative_to(root).as_posix()
    return rel.rsplit(".", 1)[0]


def image_items(root: str | os.PathLike, key: str = "data.images") -> list[dict]:
    """Every readable image under ``root`` (recursive, sorted); unreadable files are skipped with one warning."""
    root = Path(root)
    items, skipped = [], []
    for path in _files(root, key):
        try:
            with Image.open(path) as img:
                img.verify()  # header and checksums only; pixels are read when the sample is loaded
        except Exception as err:  # PIL raises many kinds for non-images and broken files
            skipped.append(f"{path} ({type(err).__name__})")
            continue
        items.append({"id": _sample_id(path, root), "source": str(path), "feature": None})
    if skipped:
        warnings.warn(f"{key}: skipped {len(skipped)} file(s) that are not readable images: " + ", ".join(skipped))
    if not items:
        raise ConfigError(key, f"no readable image in {str(root)!r}")
    return items


def feature_items(root: str | os.PathLike, key: str = "data.features") -> list[dict]:
    """Targets from ``.pt``/``.npy`` files of shape [D] (id: file) or [N, D] (ids: file/row)."""
    root = Path(root)
    items = []
    for path in (p for p in _files(root, key) if p.suffix in FEATURE_SUFFIXES):
        try:
            data = np.load(path) if path.suffix == ".npy" else torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(key, f"cannot read feature file {str(path)!r}: {err}") from err
        if not isinstance(data, (torch.Tensor, np.ndarray)) or data.dtype == object:
            raise ConfigError(key, f"{str(path)!r} holds a {type(data).__name__}, not a tensor of features with shape "
                                   f"[D] or [N, D]")
        data = torch.as_tensor(data).float()
        if data.ndim not in (1, 2):
            raise ConfigError(key, f"{str(path)!r}: features must have shape [D] or [N, D], not {list(data.shape)}")
        if data.numel() == 0:
            raise ConfigError(key, f"{str(path)!r} holds no features (shape {list(data.shape)})")
        if not torch.isfinite(data).all():
            rows = torch.nonzero(~torch.isfinite(data.view(-1, data.shape[-1])).all(1)).flatten().tolist()
            raise ConfigError(key, f"{str(path)!r}: target features contain NaN or Inf (rows {rows[:10]})")
        sid = _sample_id(path, root)
        rows = [data] if data.ndim == 1 else list(data)
        for i, row in enumerate(rows):
            items.append({"id": sid if data.ndim == 1 else f"{sid}/{i:05d}",
                          "source": str(path) + ("" if data.ndim == 1 else f"[{i}]"), "feature": row})
    if not items:
        raise ConfigError(key, f"no {'/'.join(FEATURE_SUFFIXES)} file in {str(root)!r}")
    return items


def prompt_items(prompts: list[str] | str | os.PathLike, key: str = "data.prompts") -> list[dict]:
    """Text targets from a list of prompts or a ``.txt`` file with one per line (blank lines skipped)."""
    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts)
        if not path.is_file():
            raise ConfigError(key, f"no such prompt file {str(path)!r} (cwd: {os.getcwd()})")
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(key, "no prompt")
    return [{"id": f"prompt_{i:05d}", "source": text, "feature": None, "text": text} for i, text in enumerate(prompts)]


def part_items(part: dict) -> list[dict]:
    """The files of one part of a construction (:func:`lit_featinv.method.constructions.part`): a folder's images
    (read as ``data.images`` reads them), an image, or one vector of a feature file; each ``{source, key, feature}``."""
    path, key = Path(part["file"]), part["key"]
    if part.get("folder"):
        if not require(path, key).is_dir():
            raise ConfigError(key, f"{str(path)!r} is not a folder")
        return [{"source": item["source"], "key": key, "feature": None} for item in image_items(path, key)]
    if require(path, key).is_dir():
        raise ConfigError(key, f"{str(path)!r} is a folder, not an image or a feature file")
    if path.suffix not in FEATURE_SUFFIXES:
        if part.get("features_only") or part.get("row") is not None:
            raise ConfigError(key, f"{str(path)!r} is not a feature file ({'/'.join(FEATURE_SUFFIXES)})"
                              + (f" to take row {part['row']} of" if part.get("row") is not None else ""))
        image_items(path, key)  # a readable image (pixels are read when the target is loaded)
        return [{"source": str(path), "key": key, "feature": None}]
    rows = {item["source"]: item["feature"] for item in feature_items(path, key)}
    row = part.get("row")
    if row is None:
        if len(rows) > 1:
            raise ConfigError(key, f"{str(path)!r} holds {len(rows)} vectors [N, D]: choose one, as {path}[ROW]")
        return [{"source": str(path), "key": key, "feature": next(iter(rows.values()))}]
    source = f"{path}[{row}]"
    if source not in rows:
        held = "one vector [D]" if str(path) in rows else f"{len(rows)} rows (0..{len(rows) - 1})"
        raise ConfigError(part.get("row_key", key), f"row {row} is out of range: {str(path)!r} holds {held}")
    return [{"source": source, "key": key, "feature": rows[source]}]


def constructed_items(constructions: list, key: str = "data.constructed") -> list[dict]:
    """The targets of constructions, each with its ``construction``, ``index`` and ``parts`` (their files found and
    feature files read: sizes that disagree stop here; images are read when the target is loaded)."""
    items, read = [], {}
    for n, construction in enumerate(constructions):
        construction = as_construction(construction, f"{key}[{n}]")
        for item in construction.items(f"{key}[{n}]"):
            parts = []
            for spec in item["parts"]:
                memo = tuple(sorted(spec.items()))
                read[memo] = read[memo] if memo in read else part_items(spec)
                parts += read[memo]
            vectors = [p for p in parts if p["feature"] is not None]
            for p in vectors:
                if p["feature"].numel() != vectors[0]["feature"].numel():
                    raise ConfigError(p["key"], f"{p['source']} has {p['feature'].numel()} values, but "
                                                f"{vectors[0]['source']} has {vectors[0]['feature'].numel()}")
            items.append({"id": item["id"], "source": item["source"], "feature": None, "construction": construction,
                          "index": item["index"], "parts": parts})
    return items


def as_construction(value, key: str) -> Construction:
    """A :class:`~lit_featinv.Construction`, or one from its config (``class_path``, ``init_args``), as the checks
    before any model loads see it."""
    if isinstance(value, Construction):
        return value
    spec = value.as_dict() if hasattr(value, "as_dict") else dict(value)  # a jsonargparse Namespace or a dict
    cls = import_object(spec.get("class_path", ""), "lit_featinv")
    if not (isinstance(cls, type) and issubclass(cls, Construction)):
        raise ConfigError(key, f"{spec.get('class_path')!r} is not a lit_featinv.method.constructions.Construction")
    return cls(**(spec.get("init_args") or {}))


def load_item(item: dict) -> dict:
    """A target with its image (a construction's: its parts' images) read; an image that cannot be decoded now gets
    ``error`` instead (the target is skipped)."""
    try:
        if item.get("construction") is not None:
            return {**item, "image": None, "parts": [{**p, "image": None if p["feature"] is not None
                                                      else load_image(p["source"])} for p in item["parts"]]}
        if item["feature"] is not None or item.get("text") is not None:
            return {**item, "image": None}
        return {**item, "image": load_image(item["source"])}
    except Exception as err:  # PIL raises many kinds for truncated and corrupt files
        return {**item, "image": None, "error": f"{type(err).__name__}: {err}"}


def source_of(item: dict) -> str:
    """Which ``data`` key a target comes from."""
    if item.get("construction") is not None:
        return "constructed"
    return "prompts" if item.get("text") is not None else "features" if item["feature"] is not None else "images"


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
    warn_zero_features(items, "features")
    return [{**item, "image": None} for item in items]


def warn_zero_features(items: list[dict], key: str) -> None:
    """One warning naming the feature targets that are all zeros: cosine and relative L2 to them are undefined."""
    zero = [item["source"] for item in items if item.get("feature") is not None and not item["feature"].any()]
    if zero:
        warnings.warn(f"{key}: {len(zero)} target feature(s) are all zeros ({', '.join(zero[:10])}"
                      f"{', ...' if len(zero) > 10 else ''}): they have no direction, so their cosine and relative L2 "
                      f"are undefined (null in metrics.jsonl, left out of the summary)")
