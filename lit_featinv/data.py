"""Targets: image folders (features computed on the device by the module's extractor) and feature files."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from .images import load_image

FEATURE_SUFFIXES = (".pt", ".pth", ".npy")


def _files(root: Path, key: str) -> list[Path]:
    if not root.exists():
        raise FileNotFoundError(f"{key}: no such file or folder {str(root)!r} (cwd: {os.getcwd()})")
    if root.is_file():
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
        raise ValueError(f"{key}: no readable image in {str(root)!r}")
    return items


def feature_items(root: str | os.PathLike, key: str = "data.features") -> list[dict]:
    """Targets from ``.pt``/``.npy`` files of shape [D] (id: file) or [N, D] (ids: file/row)."""
    root = Path(root)
    items = []
    for path in (p for p in _files(root, key) if p.suffix in FEATURE_SUFFIXES):
        try:
            data = np.load(path) if path.suffix == ".npy" else torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{key}: cannot read feature file {str(path)!r}: {err}") from err
        data = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data).float()
        if data.ndim not in (1, 2):
            raise ValueError(f"{path}: features must have shape [D] or [N, D], not {list(data.shape)}")
        if not torch.isfinite(data).all():
            rows = torch.nonzero(~torch.isfinite(data.view(-1, data.shape[-1])).all(1)).flatten().tolist()
            raise ValueError(f"{path}: target features contain NaN or Inf (rows {rows[:10]})")
        sid = _sample_id(path, root)
        rows = [data] if data.ndim == 1 else list(data)
        for i, row in enumerate(rows):
            items.append({"id": sid if data.ndim == 1 else f"{sid}/{i:05d}",
                          "source": str(path) + ("" if data.ndim == 1 else f"[{i}]"), "feature": row})
    if not items:
        raise ValueError(f"{key}: no {'/'.join(FEATURE_SUFFIXES)} file in {str(root)!r}")
    return items


def prompt_items(prompts: list[str] | str | os.PathLike, key: str = "data.prompts") -> list[dict]:
    """Text targets from a list of prompts or a ``.txt`` file with one per line (blank lines skipped)."""
    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts)
        if not path.is_file():
            raise FileNotFoundError(f"{key}: no such prompt file {str(path)!r} (cwd: {os.getcwd()})")
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{key}: no prompt")
    return [{"id": f"prompt_{i:05d}", "source": text, "feature": None, "text": text} for i, text in enumerate(prompts)]


class TargetDataset(Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        from_image = item["feature"] is None and item.get("text") is None
        return {**item, "image": load_image(item["source"]) if from_image else None}


def collate(items: list[dict]) -> dict:
    """Lists per key: images may differ in size and some targets have no image."""
    return {key: [item.get(key) for item in items] for key in ("id", "source", "image", "feature", "text")}


class TargetData(LightningDataModule):
    """Target features to invert, from an image folder, feature files and/or text prompts.

    Args:
        images: folder (searched recursively) or single image file; the extractor computes their features.
        features: ``.pt``/``.npy`` file or folder with features [D] or [N, D] that no image has.
        prompts: texts whose embedding (the extractor's ``encode_text``, e.g. CLIP's) is the target: a list or a
            ``.txt`` file with one prompt per line; ids ``prompt_00000``, ...
        batch_size: targets per batch (each gives ``model.samples_per_target`` generations).
        limit: use only the first ``limit`` targets (sorted by id).
    """

    def __init__(self, images: str | None = None, features: str | None = None,
                 prompts: list[str] | str | None = None, batch_size: int = 8, num_workers: int = 0,
                 limit: int | None = None):
        super().__init__()
        if images is None and features is None and prompts is None:
            raise ValueError("data: give data.images (an image folder), data.features (feature files) "
                             "and/or data.prompts (texts)")
        self.images, self.features, self.prompts = images, features, prompts
        self.batch_size, self.num_workers, self.limit = batch_size, num_workers, limit
        self.items: list[dict] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.items is not None:
            return
        items = (image_items(self.images) if self.images else []) + (feature_items(self.features) if self.features else [])
        items += prompt_items(self.prompts) if self.prompts is not None else []
        ids = [item["id"] for item in items]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"data: sample ids must be unique, but {dup} occur more than once")
        self.items = items[: self.limit] if self.limit else items

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(TargetDataset(self.items), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate)
