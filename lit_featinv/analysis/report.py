"""A report of runs on the same targets (``lit-featinv report``): what it shows, loaded and measured
(:func:`build`: the common targets, each run's generations, what varies between them), and its PNG contact sheet;
:mod:`.page` writes it as one HTML page."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ..method.measure import to_uint8
from ..runs.folder import ok
from ..runs.images import font, load_image, text_tile, tile as view_tile
from .diversity import std_map, variation
from .reading import Run, load_generations
from .trust import Reference, comparable

TILE = 112  # px: height of an image tile (28-px images at 4x)
PAD, GAP, HEADER = 2, 12, 20  # contact sheet: px between tiles, between runs, for the header row
Tile = Image.Image | str  # an image tile, or the text of a placeholder


@dataclass
class Cell:
    """One run's generations of one target: their metrics lines, tiles and :func:`~.diversity.variation`."""

    lines: list[dict]
    tiles: list[Tile]
    variation: dict | None
    size: tuple[int, int] | None  # (H, W) of its images


@dataclass
class Report:
    runs: list[Run]  # the compared runs, then the baseline when given
    baseline: bool
    targets: list[str]
    target_tiles: dict[str, Tile]
    cells: dict[tuple[int, str], Cell]  # (index in runs, target id)
    extractors: list[str]
    notes: list[str]
    height: int
    reference: Reference | None = None  # prior scores of real images
    against_reference: frozenset[int] = frozenset()  # the runs whose prior scores are read against it
    check_cosine: float | None = None  # a check's cosine below it fails (classifiers fail when their class differs)
    top: object | None = None  # real images beside latent targets (.top_images.TopImages; --top-images)
    reference_run: Run | None = None  # a reference sample of what the feature should allow (--reference-run)
    reference_maps: dict[str, torch.Tensor] = field(default_factory=dict)  # target -> the reference's std map


# ---- building ----------------------------------------------------------------------------------------------------
def tile(image01: torch.Tensor, height: int = TILE) -> Image.Image:
    """An image [C, H, W] in [0, 1] at ``height`` px (:func:`lit_featinv.runs.images.tile`)."""
    return view_tile(to_uint8(image01[None])[0], height)


def placeholder(line: dict) -> str:
    """What stands in for a generation without an image."""
    return f"missing: {line.get('image')}" if ok(line) else f"NaN/Inf at step {line.get('failed_step')}"


def make_cell(run: Run, target: str, extractors: dict, height: int) -> Cell:
    lines = run.lines(target)
    images = load_generations(run, lines)
    tiles = [placeholder(line) if img is None else tile(img, height) for img, line in zip(images, lines)]
    present = [img for img in images if img is not None]
    sizes = {tuple(img.shape) for img in present}
    return Cell(lines, tiles, variation(present, extractors) if len(sizes) == 1 else None,
                tuple(present[0].shape[-2:]) if present else None)


def target_tile(runs: list[Run], target: str, height: int, notes: list[str]) -> Tile:
    """The target image, or the text of a placeholder for a feature (or text) target or a missing file."""
    line = next(line for run in runs for line in run.lines(target))
    path = line.get("target_image")
    if path is None:
        return f"feature target: {line.get('target_source', '?')}"
    if not Path(path).is_file():
        notes.append(f"{path} is missing (the target image of {target!r})")
        return f"missing: {path}"
    return tile(load_image(path), height)


def choose_targets(runs: list[Run], notes: list[str]) -> list[str]:
    """The targets common to the runs, in id order; each run's own when they have none in common (noted)."""
    own = [set(run.targets()) for run in runs]
    common, every = set.intersection(*own), set.union(*own)
    if len(runs) > 1 and not common and every:
        notes.append(f"the runs {', '.join(repr(run.label) for run in runs)} have no target in common; each run's own "
                     f"targets are shown")
        return sorted(every)
    if len(every) > len(common):
        notes.append(f"{len(every) - len(common)} target(s) not in every run are not shown")
    return sorted(common)


def listed(targets: list[str], most: int = 5) -> str:
    return ", ".join(targets[:most]) + (", ..." if len(targets) > most else "")


def reference_maps(run: Run, targets: list[str], notes: list[str]) -> dict[str, torch.Tensor]:
    """Target -> the std map of the reference run's images of it; a note for the targets it lacks and for those it
    has fewer than two images of (they get no reference map)."""
    maps, few = {}, []
    absent = [target for target in targets if not run.lines(target)]
    for target in targets:
        images = [img for img in load_generations(run, run.lines(target)) if img is not None]
        if len(images) > 1 and len({tuple(img.shape) for img in images}) == 1:
            maps[target] = std_map(torch.stack(images))
        elif target not in absent:
            few.append(target)
    where = f"the reference run {str(run.path)!r}"
    if absent:
        notes.append(f"{where} has no images of {len(absent)} target(s) shown ({listed(absent)}): they get no "
                     f"reference map")
    if few:
        notes.append(f"{where} has fewer than two images (of one size) of {len(few)} target(s) ({listed(few)}): they "
                     f"get no reference map")
    return maps


def check_sizes(report: Report) -> None:
    """Note runs whose images differ in size (they are shown at one tile height)."""
    sizes = {}
    for (index, _), cell in report.cells.items():
        if cell.size is not None:
            sizes.setdefault(index, cell.size)
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{report.runs[i].label}: {h}x{w}" for i, (h, w) in sizes.items())
        report.notes.append(f"the runs' images differ in size ({shown}); all are shown {report.height} px high")


def build(runs: list[Run], baseline: Run | None, extractors: dict, height: int = TILE,
          notes: list[str] | None = None, reference: Reference | None = None,
          check_cosine: float | None = None, reference_run: Run | None = None) -> Report:
    """Load and measure what the page and the sheet show: the targets, each run's generations of them, variation;
    which runs' prior scores are read against the ``reference`` (a note for each that is not); the std map of each
    target's images in ``reference_run``."""
    notes, shown = list(notes or []), runs + ([baseline] if baseline is not None else [])
    for run in shown + ([reference_run] if reference_run is not None else []):
        notes += run.notes
        run.notes = []
    targets = choose_targets(runs, notes)
    cells = {(i, target): make_cell(run, target, extractors, height)
             for i, run in enumerate(shown) for target in targets if run.lines(target)}
    reasons = {i: comparable(reference, run) for i, run in enumerate(shown)} if reference is not None else {}
    notes += [reason for reason in reasons.values() if reason]
    report = Report(shown, baseline is not None, targets, {t: target_tile(shown, t, height, notes) for t in targets},
                    cells, list(extractors), notes, height, reference,
                    frozenset(i for i, reason in reasons.items() if reason is None), check_cosine)
    if reference_run is not None:
        report.reference_run, report.reference_maps = reference_run, reference_maps(reference_run, targets, notes)
    report.notes += [note for run in shown + [reference_run] if run is not None for note in run.notes]  # missing images
    check_sizes(report)
    return report


# ---- the contact sheet -------------------------------------------------------------------------------------------
def sheet_tile(item: Tile, height: int) -> Image.Image:
    return text_tile(item, height) if isinstance(item, str) else item.convert("RGB")


def contact_sheet(report: Report) -> Image.Image:
    """Rows: targets; columns: target | each run's generations (the baseline's last), run labels on top; with
    ``report.top``, a latent run's generations and its top real images, each captioned with its activation."""
    height, targets, top = report.height, report.targets, report.top
    text = top.target_text if top is not None else str
    shown = {t: text(t) if isinstance(report.target_tiles[t], str) else report.target_tiles[t] for t in targets}
    groups = [("target", [[shown[t]] for t in targets])]
    for i, run in enumerate(report.runs):
        rows = [getattr(report.cells.get((i, t)), "tiles", []) for t in targets]
        groups += top.sheet_groups(report, i, rows) if top is not None else [(run.label, rows)]
    layout, x = [], 0
    for label, rows in groups:
        rows = [[sheet_tile(item, height) for item in row] for row in rows]
        slots = max((len(row) for row in rows), default=0) or 1
        slot = max((img.width for row in rows for img in row), default=height)
        width = slots * slot + (slots - 1) * PAD
        layout.append((label[: max(1, width // 6)], rows, x, slot))
        x += width + GAP
    row = max((img.height for _, rows, _, _ in layout for r in rows for img in r), default=height)  # captions: taller
    sheet = Image.new("RGB", (x - GAP, HEADER + len(targets) * (row + PAD) - PAD * bool(targets)), "white")
    draw = ImageDraw.Draw(sheet)
    for label, rows, left, slot in layout:
        draw.text((left + 2, 4), label, fill="black", font=font())
        for r, images in enumerate(rows):
            for s, img in enumerate(images):
                sheet.paste(img, (left + s * (slot + PAD) + (slot - img.width) // 2, HEADER + r * (row + PAD)))
    return sheet
