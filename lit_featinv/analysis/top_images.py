"""Real images beside latent targets (``lit-featinv report --top-images FOLDER``): for a run that maximises latents or
channels (:class:`lit_featinv.Activation`, one entry of the feature per target), the images of a folder with the
highest activation of each target's entry, by the run's own extractor (built from its ``config.yaml``), and the
activation each reaches; the generations' own is ``-loss`` of their metrics lines."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ..errors import ConfigError
from ..runs.folder import CONFIG, ok
from ..runs.images import font, load_image
from ..runs.sources import feature_items
from .reading import Run, load_extractor
from .report import Report, Tile, sheet_tile, tile

KEY = "report.top_images"
TOP = 4  # real images per target
BATCH = 256  # images per forward pass
CAPTION = 14  # px under a contact sheet tile for its activation
ACTIVATIONS = ("Activation",)  # loss classes (the last part of class_path) that maximise one entry per target
WRAPPERS = ("Diverse",)  # losses whose image loss is their init_args.loss's


@dataclass
class Real:
    """One real image of the folder: its path relative to the folder, its activation, its tile."""

    name: str
    activation: float
    tile: Image.Image


@dataclass
class TopImages:
    """The folder's top images of each target of each run that maximises entries of its feature."""

    folder: Path
    count: int  # images in the folder
    top: int  # shown per target
    labels: dict[int, dict[str, str]] = field(default_factory=dict)  # run index -> target -> "latent 1382"
    best: dict[tuple[int, str], list[Real]] = field(default_factory=dict)  # (run index, target) -> the top images

    def activation(self, index: int, line: dict) -> float | None:
        """A generation's activation of its target's entry: ``-loss`` (measured on the saved image)."""
        if index not in self.labels or not ok(line) or line.get("loss") is None:
            return None
        return -float(line["loss"])

    def target_text(self, target: str) -> str:
        """The target's id and, where a run names it, the latent it maximises."""
        label = next((labels[target] for labels in self.labels.values() if target in labels), None)
        return f"{target} {label}" if label else target

    def sheet_groups(self, report: Report, index: int, rows: list[list[Tile]]) -> list[tuple[str, list[list]]]:
        """A run's contact sheet columns: its generations (captioned with their activation when it maximises
        entries), then its top real images, each captioned with its activation."""
        run = report.runs[index]
        if index not in self.labels:
            return [(run.label, rows)]
        lines = [getattr(report.cells.get((index, t)), "lines", []) for t in report.targets]
        generated = [[captioned(sheet_tile(item, report.height), number(self.activation(index, line)))
                      for item, line in zip(row, row_lines)] for row, row_lines in zip(rows, lines)]
        real = [[captioned(sheet_tile(r.tile, report.height), number(r.activation))
                 for r in self.best.get((index, t), [])] for t in report.targets]
        return [(run.label, generated), (f"top {self.top} real of {self.count}", real)]


def number(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f}"


def captioned(image: Image.Image, text: str) -> Image.Image:
    """A tile with a line of text under it (as wide as the text needs)."""
    width = max(image.width, int(font(10).getlength(text)) + 4)
    out = Image.new("RGB", (width, image.height + CAPTION), "white")
    out.paste(image.convert("RGB"), ((width - image.width) // 2, 0))
    ImageDraw.Draw(out).text((2, image.height + 1), text, fill="black", font=font(10))
    return out


# ---- inputs ------------------------------------------------------------------------------------------------------
def image_files(folder: str | Path) -> list[Path]:
    """The PNG images under ``folder`` (recursive, hidden paths left out), in path order; a :class:`ConfigError` when
    there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(KEY, f"{str(folder)!r} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".png" and p.is_file()
                   and not any(s.startswith(".") for s in p.relative_to(root).parts))
    if not files:
        raise ConfigError(KEY, f"no PNG image in {str(folder)!r}: give a folder of real images (searched recursively)")
    return files


def objective(run: Run) -> int | None:
    """The entry every target maximises (``Activation(channel=c)``), or None when each one-hot target names its own;
    a :class:`ConfigError` when the run's loss is not an activation objective."""
    loss = ((run.config.get("model") or {}).get("init_args") or {}).get("loss")
    while isinstance(loss, dict) and str(loss.get("class_path", "")).rsplit(".", 1)[-1] in WRAPPERS:
        loss = (loss.get("init_args") or {}).get("loss")
    name = str((loss or {}).get("class_path", "?")).rsplit(".", 1)[-1] if isinstance(loss, dict) else "?"
    if name not in ACTIVATIONS:
        raise ConfigError(KEY, f"run {run.label!r} has loss {name}, not an activation objective "
                               f"(lit_featinv.Activation): it has no latent to rank real images by; it is shown "
                               f"without them")
    return (loss.get("init_args") or {}).get("channel")


def target_entry(run: Run, target: str, channel: int | None, cache: dict) -> int:
    """The feature entry a target maximises: ``channel``, or where its one-hot target vector has its 1 (read from the
    feature file its metrics line names)."""
    if channel is not None:
        return int(channel)
    source = str(run.lines(target)[0].get("target_source", ""))
    file = re.sub(r"\[\d+\]$", "", source)
    if not Path(file).is_file():
        raise ConfigError(KEY, f"run {run.label!r}, target {target!r}: its target vector {source!r} cannot be read "
                               f"(not a feature file that exists here)")
    if file not in cache:
        cache[file] = {item["source"]: item["feature"] for item in feature_items(file, KEY)}
    vector = cache[file].get(source)
    if vector is None or (vector != 0).sum() != 1 or float(vector.sum()) != 1:
        raise ConfigError(KEY, f"run {run.label!r}, target {target!r}: {source!r} is not a one-hot vector")
    return int(vector.nonzero()[0])


def entry_label(run: Run, entry: int) -> str:
    """What entry ``entry`` of the run's feature is: ``latent N`` (an SAE's), ``channel N`` (with ``select``)."""
    spec = ((run.config.get("model") or {}).get("init_args") or {}).get("extractor") or {}
    args, sae = spec.get("init_args") or {}, str(spec.get("class_path", "")).endswith("SAEExtractor")
    chosen = args.get("latents") if sae else args.get("select")
    index = chosen[entry] if isinstance(chosen, list) and entry < len(chosen) else entry
    return f"{'latent' if sae else 'channel'} {index}"


# ---- measuring -----------------------------------------------------------------------------------------------------
@torch.no_grad()
def measure_folder(extractor, files: list[Path], entries: list[int], batch: int = BATCH,
                   notes: list[str] | None = None) -> torch.Tensor:
    """The ``entries`` of each image's feature [N, len(entries)], float32 on the 8-bit images as read
    (``extractor.measure``), in batches of one image size; NaN for a file that cannot be read (noted)."""
    out = torch.full((len(files), len(entries)), math.nan)
    pending: dict[tuple, list[tuple[int, torch.Tensor]]] = {}

    def flush(shape: tuple) -> None:
        index, images = zip(*pending.pop(shape))
        features = extractor.measure(torch.stack(images))
        wrong = [e for e in entries if not 0 <= e < features.shape[1]]
        if wrong:
            raise ConfigError(KEY, f"entries {wrong} are out of range of the extractor's {features.shape[1]}-value "
                                   f"feature")
        out[list(index)] = features[:, entries].float()

    unreadable = []
    for i, file in enumerate(files):
        try:
            image = load_image(str(file))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # PIL's kinds for broken files
            unreadable.append(f"{file} ({type(err).__name__})")
            continue
        pending.setdefault(tuple(image.shape), []).append((i, image))
        if len(pending[tuple(image.shape)]) >= batch:
            flush(tuple(image.shape))
    for shape in list(pending):
        flush(shape)
    if unreadable and notes is not None:
        notes.append(f"{KEY}: {len(unreadable)} image(s) cannot be read and are left out: {', '.join(unreadable[:3])}")
    return out


def top_of(values: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` largest values (NaN last and left out), the first file first among equal ones."""
    order = torch.sort(torch.nan_to_num(values, nan=-math.inf), descending=True, stable=True).indices
    return [int(i) for i in order if not math.isnan(float(values[i]))][:n]


def run_entries(run: Run, targets: list[str]) -> dict[str, int]:
    """Target -> the feature entry it maximises, for the run's ``targets`` (a :class:`ConfigError` when one has
    none)."""
    channel, cache = objective(run), {}
    return {target: target_entry(run, target, channel, cache) for target in targets if run.lines(target)}


def add_top_images(report: Report, folder: str | Path, top: int = TOP, batch: int = BATCH,
                   files: list[Path] | None = None) -> TopImages:
    """Measure the folder's images with each activation run's extractor and keep each target's ``top`` images
    (``report.top``); a note for each run that has none, which is shown as before."""
    if top < 1:
        raise ConfigError("report.top", f"{top} images per target: give 1 or more")
    folder = Path(folder)
    files = image_files(folder) if files is None else files
    result, measured = TopImages(folder, len(files), top), {}
    for index, run in enumerate(report.runs):
        try:
            entries = run_entries(run, report.targets)
            spec = json.dumps(((run.config.get("model") or {}).get("init_args") or {}).get("extractor"), sort_keys=True)
            if spec not in measured:
                if not (run.path / CONFIG).is_file():
                    raise ConfigError(KEY, f"run {run.label!r} has no {CONFIG} to build its extractor from")
                try:
                    measured[spec] = (load_extractor(str(run.path / CONFIG))[1], {})
                except ConfigError as err:
                    raise ConfigError(KEY, f"run {run.label!r}: its extractor cannot be built ({err})") from None
            extractor, values = measured[spec]
            needed = sorted(set(entries.values()) - set(values))
            if needed:
                try:
                    columns = measure_folder(extractor, files, needed, batch, report.notes)
                except ConfigError as err:
                    raise ConfigError(KEY, f"run {run.label!r}: {str(err).removeprefix(KEY + ': ')}") from None
                values.update({e: columns[:, j] for j, e in enumerate(needed)})
        except ConfigError as err:
            report.notes.append(str(err))
            continue
        result.labels[index] = {t: entry_label(run, e) for t, e in entries.items()}
        for target, entry in entries.items():
            result.best[index, target] = [
                Real(files[i].relative_to(folder).as_posix() if files[i].is_relative_to(folder) else str(files[i]),
                     float(values[entry][i]), tile(load_image(str(files[i])), report.height))
                for i in top_of(values[entry], top)]
    report.top = result
    return result
