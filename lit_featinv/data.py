"""Targets: image folders (features computed on the device by the module's extractor), feature files, prompts and
constructions from other targets' features (:mod:`lit_featinv.targets`)."""
from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from .errors import ConfigError
from .images import load_image
from .loading import import_object
from .targets import Construction

FEATURE_SUFFIXES = (".pt", ".pth", ".npy")


def _require(root: Path, key: str) -> Path:
    if not root.exists():
        raise ConfigError(key, f"no such file or folder {str(root)!r} (cwd: {os.getcwd()})")
    return root


def _files(root: Path, key: str) -> list[Path]:
    if _require(root, key).is_file():
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
    """The files of one part of a construction (:func:`lit_featinv.targets.part`): a folder's images (read as
    ``data.images`` reads them), an image, or one vector of a feature file; each ``{source, key, feature}``."""
    path, key = Path(part["file"]), part["key"]
    if part.get("folder"):
        if not _require(path, key).is_dir():
            raise ConfigError(key, f"{str(path)!r} is not a folder")
        return [{"source": item["source"], "key": key, "feature": None} for item in image_items(path, key)]
    if _require(path, key).is_dir():
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
    """A :class:`~lit_featinv.targets.Construction`, or one from its config (``class_path``, ``init_args``), as the
    checks before any model loads see it."""
    if isinstance(value, Construction):
        return value
    spec = value.as_dict() if hasattr(value, "as_dict") else dict(value)  # a jsonargparse Namespace or a dict
    cls = import_object(spec.get("class_path", ""), "lit_featinv")
    if not (isinstance(cls, type) and issubclass(cls, Construction)):
        raise ConfigError(key, f"{spec.get('class_path')!r} is not a lit_featinv.targets.Construction")
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


class TargetBatches(Dataset):
    """Batches of targets, each one element (the DataLoader does not batch again)."""

    def __init__(self, batches: list[list[dict]]):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return collate([load_item(item) for item in self.batches[index]])


def as_is(batch: dict) -> dict:
    """The DataLoader's collate function: a TargetBatches element is a batch already."""
    return batch


def collate(items: list[dict]) -> dict:
    """Lists per key: images may differ in size and some targets have no image."""
    keys = ("id", "source", "image", "feature", "text", "error", "construction", "index", "parts")
    return {key: [item.get(key) for item in items] for key in keys}


class TargetData(LightningDataModule):
    """Target features to invert, from an image folder, feature files and/or text prompts.

    Args:
        images: folder (searched recursively) or single image file; the extractor computes their features.
        features: ``.pt``/``.npy`` file or folder with features [D] or [N, D] that no image has.
        prompts: texts whose embedding (the extractor's ``encode_text``, e.g. CLIP's) is the target: a list or a
            ``.txt`` file with one prompt per line; ids ``prompt_00000``, ...
        constructed: targets built from other targets' features (:mod:`lit_featinv.targets`):
            :class:`~lit_featinv.targets.Interpolation`, :class:`~lit_featinv.targets.Arithmetic`,
            :class:`~lit_featinv.targets.FolderMean`, :class:`~lit_featinv.targets.Direction`; after the others.
        batch_size: targets per batch (each gives ``model.samples_per_target`` generations). Batches are fixed by it
            (consecutive targets in id order), so a generation's pixels do not depend on the device count or on
            resuming; another batch size changes them slightly (float rounding).
        limit: use only the first ``limit`` targets: images (sorted by id), then feature files, prompts and
            constructed targets; with several sources given, a warning says what it left out.

    Under several processes (DDP), batch ``k`` goes to global rank ``k % world_size``: each target is generated
    by exactly one rank; finished targets (:meth:`skip`) are left out.
    """

    def __init__(self, images: str | None = None, features: str | None = None,
                 prompts: list[str] | str | None = None, constructed: list[Construction] | None = None,
                 batch_size: int = 8, num_workers: int = 0, limit: int | None = None):
        super().__init__()
        self.allow_zero_length_dataloader_with_multiple_devices = True  # fewer batches than ranks is fine
        if images is None and features is None and prompts is None and not constructed:
            raise ConfigError("data", "give data.images (an image folder), data.features (feature files), "
                                      "data.prompts (texts) and/or data.constructed (targets built from features)")
        for n, construction in enumerate(constructed or []):
            construction.items(f"data.constructed[{n}]")  # its arguments (files are read in setup)
        if batch_size < 1:
            raise ConfigError("data.batch_size", f"{batch_size} is not a number of targets (>= 1)")
        if limit is not None and limit < 1:
            raise ConfigError("data.limit", f"{limit} is not a number of targets (>= 1, or null for all)")
        self.images, self.features, self.prompts, self.constructed = images, features, prompts, constructed or []
        self.batch_size, self.num_workers, self.limit = batch_size, num_workers, limit
        self.items: list[dict] | None = None
        self.finished: set[str] = set()

    @staticmethod
    def check_sources(images=None, features=None, prompts=None, constructed=None, **unused) -> None:
        """Before any model loads: the sources exist and the feature files are well formed (images are read later);
        constructions: their arguments, files and the sizes of their feature files."""
        if images is not None:
            _require(Path(images), "data.images")
        if features is not None:
            feature_items(features)
        if prompts is not None:
            prompt_items(prompts)
        constructed_items(constructed or [])

    def setup(self, stage: str | None = None) -> None:
        if self.items is not None:
            return
        items = (image_items(self.images) if self.images else []) + (feature_items(self.features) if self.features else [])
        items += prompt_items(self.prompts) if self.prompts is not None else []
        items += constructed_items(self.constructed)
        counts = Counter(item["id"] for item in items)
        if len(counts) != len(items):
            dup = sorted(i for i, n in counts.items() if n > 1)[:5]
            hint = " (give constructions a name)" if self.constructed else ""
            raise ConfigError("data", f"sample ids must be unique, but {dup} occur more than once{hint}")
        self.items = items[: self.limit] if self.limit else items
        sources = [kind for kind, given in (("images", self.images), ("features", self.features),
                                            ("prompts", self.prompts), ("constructed", self.constructed)) if given]
        left = Counter(source_of(item) for item in items[len(self.items):])
        if left and len(sources) > 1:  # the order of the sources decides what is left out: say it
            warnings.warn(f"data.limit: the first {self.limit} of {len(items)} targets are used (in the order "
                          f"{', '.join(sources)}); left out: " + ", ".join(f"{n} {k}" for k, n in left.items()))

    def skip(self, finished: set[str]) -> None:
        """Leave out the batches all of whose targets are finished (a resumed run)."""
        self.finished = set(finished)

    def batches(self) -> list[list[dict]]:
        """This rank's batches: fixed chunks of the target list, ``k % world_size == rank``, unfinished ones."""
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        chunks = [self.items[i: i + self.batch_size] for i in range(0, len(self.items), self.batch_size)]
        return [chunk for k, chunk in enumerate(chunks)
                if k % world == rank and any(item["id"] not in self.finished for item in chunk)]

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(TargetBatches(self.batches()), batch_size=None, shuffle=False, num_workers=self.num_workers,
                          collate_fn=as_is)
