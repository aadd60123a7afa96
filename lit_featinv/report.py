"""``lit-featinv report RUN_DIR [RUN_DIR ...]``: one self-contained HTML page (images as data URIs, inline CSS and
SVG, no scripts) that puts runs on the same targets side by side, with their match, summaries, cosine histograms,
trajectories and what varies between the generations of a target; ``--sheet`` adds a PNG contact sheet."""
from __future__ import annotations

import argparse
import base64
import html
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import analysis
from .analysis import Run
from .errors import ConfigError
from .images import load_image, text_tile, tile as view_tile, to_uint8

PREFIX = "lit-featinv report"
TILE = 112  # px: height of an image tile (28-px images at 4x)
PAD, GAP, HEADER = 2, 12, 20  # contact sheet: px between tiles, between runs, for the header row
MAX_CURVES = 200  # thin lines drawn per trajectory plot (the mean uses all)
Tile = Image.Image | str  # an image tile, or the text of a placeholder


@dataclass
class Cell:
    """One run's generations of one target: their metrics lines, tiles and :func:`~lit_featinv.analysis.variation`."""

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


# ---- building ----------------------------------------------------------------------------------------------------
def tile(image01: torch.Tensor, height: int = TILE) -> Image.Image:
    """An image [C, H, W] in [0, 1] at ``height`` px (:func:`lit_featinv.images.tile`)."""
    return view_tile(to_uint8(image01[None])[0], height)


def heat(std: torch.Tensor, vmax: float) -> torch.Tensor:
    """A std map [H, W] as a colour image [3, H, W] in [0, 1] (magma, 0 .. vmax)."""
    from matplotlib import colormaps
    rgba = colormaps["magma"]((std / vmax).clamp(0, 1).numpy())
    return torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float()


def placeholder(line: dict) -> str:
    """What stands in for a generation without an image."""
    return f"missing: {line.get('image')}" if analysis.ok(line) else f"NaN/Inf at step {line.get('failed_step')}"


def make_cell(run: Run, target: str, extractors: dict, height: int) -> Cell:
    lines = run.lines(target)
    images = analysis.load_generations(run, lines)
    tiles = [placeholder(line) if img is None else tile(img, height) for img, line in zip(images, lines)]
    present = [img for img in images if img is not None]
    sizes = {tuple(img.shape) for img in present}
    return Cell(lines, tiles, analysis.variation(present, extractors) if len(sizes) == 1 else None,
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
          notes: list[str] | None = None) -> Report:
    """Load and measure what the page and the sheet show: the targets, each run's generations of them, variation."""
    notes, shown = list(notes or []), runs + ([baseline] if baseline is not None else [])
    for run in shown:
        notes += run.notes
        run.notes = []
    targets = choose_targets(runs, notes)
    cells = {(i, target): make_cell(run, target, extractors, height)
             for i, run in enumerate(shown) for target in targets if run.lines(target)}
    report = Report(shown, baseline is not None, targets, {t: target_tile(shown, t, height, notes) for t in targets},
                    cells, list(extractors), notes, height)
    report.notes += [note for run in shown for note in run.notes]  # missing image files
    check_sizes(report)
    return report


# ---- the page ----------------------------------------------------------------------------------------------------
CSS = """
body { font-family: sans-serif; margin: 16px; color: #222; background: #fff; }
table { border-collapse: collapse; margin-bottom: 16px; }
th, td { border: 1px solid #ddd; padding: 4px 6px; vertical-align: top; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.gens { display: flex; gap: 4px; align-items: flex-start; }
figure { margin: 0; text-align: center; font-size: 11px; }
img { image-rendering: pixelated; display: block; }
.ph { background: #eee; color: #555; font-size: 11px; overflow: hidden; word-break: break-all; display: flex;
      align-items: center; justify-content: center; text-align: center; }
.notes { background: #fff4d6; border: 1px solid #e0b84c; padding: 8px 24px; }
.config { font-size: 11px; white-space: nowrap; }
.none { color: #999; }
"""


def png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def tile_html(item: Tile, height: int, title: str = "") -> str:
    if isinstance(item, str):
        return f'<div class="ph" style="width:{height}px;height:{height}px">{html.escape(item)}</div>'
    return (f'<img src="{png_uri(item)}" width="{item.width}" height="{item.height}" alt="{html.escape(title)}" '
            f'title="{html.escape(title)}">')


def figure_html(item: Tile, caption: str, height: int, title: str = "") -> str:
    return f"<figure>{tile_html(item, height, title)}<figcaption>{caption}</figcaption></figure>"


def caption(line: dict) -> str:
    if not analysis.ok(line):
        return "failed"
    return f"cos {num(line.get('cosine'))}<br>rel. L2 {num(line.get('rel_l2'), 3)}"


def sparkline(series: list[list[float]], height: int) -> str:
    """Inline SVG: the cosine of each generation against guided iteration."""
    values = [v for s in series for v in s]
    if not values:
        return ""
    lo, hi, width = min(values), max(values), 140
    dx, dy = (width - 4) / max(1, max(len(s) for s in series) - 1), (height - 18) / ((hi - lo) or 1.0)
    lines = []
    for s in series:
        points = " ".join(f"{2 + dx * i:.1f},{height - 14 - dy * (v - lo):.1f}" for i, v in enumerate(s))
        lines.append(f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="1" opacity="0.7"/>')
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f"<title>cosine to the target at each guided iteration ({lo:.4f} .. {hi:.4f})</title>{''.join(lines)}"
            f'<text x="2" y="{height - 2}" font-size="10" fill="#555">cosine: {lo:.3f} .. {hi:.3f}</text></svg>')


def run_cell(report: Report, index: int, target: str, vmax: float) -> str:
    cell = report.cells.get((index, target))
    if cell is None:
        return '<td class="none">not in this run</td>'
    run, height = report.runs[index], report.height
    parts = [figure_html(item, caption(line), height, f"{line['id']}_{line.get('sample', 0)}")
             for item, line in zip(cell.tiles, cell.lines)]
    if cell.variation is not None:
        names = ["pixel", *report.extractors]
        measured = "".join(f"<br>{html.escape(name)} {num(cell.variation[name])}" for name in names)
        parts.append(figure_html(tile(heat(cell.variation["std"], vmax), height), f"std map{measured}", height,
                                 "per-pixel standard deviation across the generations"))
    curves = [run.trajectories.get((line["id"], line.get("sample", 0))) for line in cell.lines]
    parts.append(sparkline([c["cosine"] for c in curves if c], height))
    return f'<td><div class="gens">{"".join(parts)}</div></td>'


def targets_table(report: Report) -> str:
    maps = [float(c.variation["std"].max()) for c in report.cells.values() if c.variation]
    vmax = max(maps, default=0.0) or 1.0
    head = "".join(f"<th>{html.escape(run.label)}</th>" for run in report.runs)
    rows = [f"<tr><td>{html.escape(t)}{tile_html(report.target_tiles[t], report.height, t)}</td>"
            + "".join(run_cell(report, i, t, vmax) for i in range(len(report.runs))) + "</tr>" for t in report.targets]
    explained = (f"; the std map is the per-pixel standard deviation across a target's generations (black 0, yellow "
                 f"{vmax:.3f}, one scale for the page), with the mean pairwise RMS pixel difference and, per "
                 f"extractor, the mean pairwise 1 − cosine of the generations' features" if maps else "")
    return (f"<h2>Targets</h2><p>Each generation with its cosine and relative L2 to the target feature{explained}; the "
            f"curve is the cosine at each guided iteration.</p><table><tr><th>target</th>{head}</tr>{''.join(rows)}"
            f"</table>")


def run_lines(report: Report, index: int) -> list[dict]:
    return [line for t in report.targets for line in getattr(report.cells.get((index, t)), "lines", [])]


def summary_table(report: Report) -> str:
    names = ["pixel", *report.extractors]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", "folder", "config", "generations", "mean cos",
                                                          "worst cos", "mean rel. L2", "s / generation",
                                                          *(f"diversity: {name}" for name in names)])
    rows = []
    for i, run in enumerate(report.runs):
        stats = analysis.run_stats(run_lines(report, i))
        measured = [c.variation for (j, _), c in report.cells.items() if j == i and c.variation]
        numbers = [f"{stats['generations']}" + (f" ({stats['failed']} failed)" if stats["failed"] else ""),
                   num(stats["mean_cosine"]), num(stats["worst_cosine"]), num(stats["mean_rel_l2"]),
                   num(stats["mean_seconds"], 2), *(num(analysis.mean([v[name] for v in measured])) for name in names)]
        config = "<br>".join(html.escape(line) for line in analysis.config_summary(run.config))
        numbers = "".join(f'<td class="num">{n}</td>' for n in numbers)
        rows.append(f"<tr><td>{html.escape(run.label)}</td><td>{html.escape(str(run.path))}</td>"
                    f'<td class="config">{config}</td>{numbers}</tr>')
    return (f"<h2>Runs</h2><p>Over the generations of the {len(report.targets)} target(s) shown; diversity: the mean "
            f"over targets with two or more generations.</p><table><tr>{head}</tr>{''.join(rows)}</table>")


def histogram(report: Report) -> str:
    """The cosines of each compared run (the baseline's are in the table: they would squeeze the others)."""
    from matplotlib.figure import Figure
    compared = report.runs[:-1] if report.baseline else report.runs
    values = {run.label: [line["cosine"] for line in run_lines(report, i) if analysis.ok(line) and "cosine" in line]
              for i, run in enumerate(compared)}
    every = [v for vs in values.values() for v in vs]
    if not every:
        return ""
    lo, hi = min(every), max(every)
    bins = np.linspace(lo - 1e-3 * (lo == hi), hi + 1e-3 * (lo == hi), 31)
    fig = Figure(figsize=(7, 2.8))
    ax = fig.subplots()
    for label, vs in values.items():
        ax.hist(vs, bins=bins, histtype="step", linewidth=1.5, label=label)
    ax.set(xlabel="cosine to target", ylabel="generations")
    ax.legend(fontsize=8)
    return f'<h2>Cosine to target</h2><img src="{figure_uri(fig)}" alt="histogram of cosines per run">'


def trajectory_plot(report: Report, index: int) -> str:
    """Cosine and loss against guided iteration for every generation (thin), their mean (thick) and where each
    generation's best image was found (triangles)."""
    from matplotlib.figure import Figure
    run = report.runs[index]
    found = [(run.trajectories[key], line.get("best_step")) for line in run_lines(report, index)
             if (key := (line["id"], line.get("sample", 0))) in run.trajectories]
    if not found:
        return f"<p>{html.escape(run.label)}: no trajectories (no trajectories.jsonl of this version).</p>"
    fig = Figure(figsize=(11, 2.8))
    for ax, name in zip(fig.subplots(1, 2), ("cosine", "loss")):
        series = [np.asarray(t[name], dtype=float) for t, _ in found]
        for s in series[:MAX_CURVES]:
            ax.plot(s, linewidth=0.6, alpha=0.35, color="C0")
        padded = np.full((len(series), max(len(s) for s in series)), np.nan)
        for row, s in zip(padded, series):
            row[: len(s)] = s
        ax.plot(np.nanmean(padded, axis=0), linewidth=2, color="C3", label="mean")
        best = [(i, t[name][i]) for t, step in found if (i := analysis.best_iteration(t, step)) is not None]
        if best:
            ax.scatter(*zip(*best), marker="v", s=16, color="k", zorder=3, label="best image")
        if name == "loss" and np.nanmin(padded) > 0:
            ax.set_yscale("log")
        ax.set(title=f"{run.label}: {name}", xlabel="guided iteration")
        ax.legend(fontsize=8)
    return f'<img src="{figure_uri(fig)}" alt="trajectories of {html.escape(run.label)}">'


def page(report: Report) -> str:
    notes = ("<ul class=\"notes\">" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>"
             if report.notes else "")
    trajectories = "".join(trajectory_plot(report, i) for i in range(len(report.runs)))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>lit_featinv report</title>'
            f"<style>{CSS}</style></head><body><h1>lit_featinv report</h1>{notes}{summary_table(report)}"
            f"{targets_table(report)}{histogram(report)}<h2>Trajectories</h2>{trajectories}</body></html>\n")


# ---- the contact sheet -------------------------------------------------------------------------------------------
def sheet_tile(item: Tile, height: int) -> Image.Image:
    return text_tile(item, height) if isinstance(item, str) else item.convert("RGB")


def contact_sheet(report: Report) -> Image.Image:
    """Rows: targets; columns: target | each run's generations (the baseline's last), run labels on top."""
    height, targets = report.height, report.targets
    shown = {t: t if isinstance(report.target_tiles[t], str) else report.target_tiles[t] for t in targets}  # text: id
    groups = [("target", [[shown[t]] for t in targets])] + [
        (run.label, [getattr(report.cells.get((i, t)), "tiles", []) for t in targets])
        for i, run in enumerate(report.runs)]
    layout, x = [], 0
    for label, rows in groups:
        rows = [[sheet_tile(item, height) for item in row] for row in rows]
        slots = max((len(row) for row in rows), default=0) or 1
        slot = max((img.width for row in rows for img in row), default=height)
        width = slots * slot + (slots - 1) * PAD
        layout.append((label[: max(1, width // 6)], rows, x, slot))
        x += width + GAP
    sheet = Image.new("RGB", (x - GAP, HEADER + len(targets) * (height + PAD) - PAD * bool(targets)), "white")
    draw = ImageDraw.Draw(sheet)
    for label, rows, left, slot in layout:
        draw.text((left + 2, 4), label, fill="black")
        for r, row in enumerate(rows):
            for s, img in enumerate(row):
                sheet.paste(img, (left + s * (slot + PAD) + (slot - img.width) // 2, HEADER + r * (height + PAD)))
    return sheet


# ---- the command -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PREFIX, description="Runs on the same targets side by side, in one "
                                     "self-contained HTML page (and a PNG contact sheet).")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by lit-featinv predict")
    parser.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    parser.add_argument("--sheet", help="also write a PNG contact sheet here")
    parser.add_argument("--baseline", metavar="RUN_DIR", help="an unguided run of the same targets, in its own column")
    parser.add_argument("--extractor", nargs="+", action="extend", default=[], metavar="CONFIG.yaml",
                        help="feature extractors ({class_path, init_args}) to measure diversity in")
    parser.add_argument("--label", nargs="+", action="extend", metavar="NAME", help="one name per RUN_DIR")
    parser.add_argument("--tile", type=int, default=TILE, help=f"tile height in px (default {TILE})")
    return parser.parse_args(argv)


def default_labels(paths: list[str]) -> list[str]:
    """Folder names; the paths as given where two share a name."""
    names = [Path(p).resolve().name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def load_runs(args: argparse.Namespace) -> tuple[list[Run], Run | None, list[str]]:
    """The runs that can be read, the baseline, and a line for each one left out."""
    labels = args.label or default_labels(args.runs)
    if len(labels) != len(args.runs):
        raise ConfigError("report.label", f"{len(labels)} label(s) for {len(args.runs)} run folder(s); give one each")
    runs, notes, baseline = [], [], None
    for path, label in zip(args.runs, labels):
        try:
            runs.append(analysis.load_run(path, label))
        except ConfigError as err:
            notes.append(str(err))
    if args.baseline:
        try:
            baseline = analysis.load_run(args.baseline, "baseline", key="report.baseline")
        except ConfigError as err:
            notes.append(str(err))
    return runs, baseline, notes


def main(argv: list[str] | None = None) -> None:
    """Write the report; a line per input problem (stderr, and on the page); exit status 1 only if no run can be
    shown."""
    args = parse_args(argv)
    try:
        if args.tile < 8:
            raise ConfigError("report.tile", f"{args.tile} px is too small; give 8 or more")
        extractors = dict(analysis.load_extractor(path) for path in args.extractor)
        runs, baseline, notes = load_runs(args)
    except ConfigError as err:
        raise SystemExit(f"{PREFIX}: error: {err}") from None
    if not runs and baseline is not None:
        runs, baseline = [baseline], None
    if not runs:
        for note in notes:
            print(f"{PREFIX}: {note}", file=sys.stderr)
        raise SystemExit(f"{PREFIX}: error: report.runs: no run folder could be read; nothing written")
    report = build(runs, baseline, extractors, args.tile, notes)
    for note in report.notes:
        print(f"{PREFIX}: {note}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(report), encoding="utf-8")
    print(f"{PREFIX}: wrote {out.resolve()}")
    if args.sheet:
        Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(report).save(args.sheet)
        print(f"{PREFIX}: wrote {Path(args.sheet).resolve()}")
