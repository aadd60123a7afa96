"""The targets of a run as a LightningDataModule: fixed batches of items from the sources (:mod:`.sources`), each
rank its own."""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from ..method.constructions import Construction
from .sources import (constructed_items, feature_items, image_items, load_item, prompt_items, require, source_of,
                      warn_zero_features)


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
        constructed: targets built from other targets' features (:mod:`lit_featinv.method.constructions`):
            :class:`~lit_featinv.Interpolation`, :class:`~lit_featinv.Arithmetic`, :class:`~lit_featinv.FolderMean`,
            :class:`~lit_featinv.Direction`; after the others.
        batch_size: targets per batch (each gives ``model.samples_per_target`` generations). Batches are fixed by it
            (consecutive targets in id order), so a generation's pixels do not depend on the device count or on
            resuming; another batch size changes them slightly (float rounding).
        num_workers: DataLoader worker processes that read the target images (0: in the main process); a rerun may
            change it.
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
        constructions: their arguments, files and the sizes of their feature files. An image folder that is not there
        (the presets' placeholder ``targets``) is named by the key as typed, with the line that gives one."""
        if images is not None:
            require(Path(images), "data.init_args.images",
                    "; give your images: --data.init_args.images path/to/your/images")
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
        if self.trainer is None or self.trainer.is_global_zero:
            warn_zero_features(self.items, "data.features")

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
