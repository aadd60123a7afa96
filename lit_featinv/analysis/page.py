"""The report as one self-contained HTML page: images as data URIs, inline CSS and SVG, no scripts; runs side by
side with their match, summaries, cosine histograms, trajectories and what varies between a target's generations."""
from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import torch
from PIL import Image

from ..runs.folder import mean, ok, run_stats
from .diversity import against_reference
from .reading import best_iteration, config_summary
from .report import Report, Tile, tile
from .trust import PERCENTILE, atypical, disagreeing

MAX_CURVES = 200  # thin lines drawn per trajectory plot (the mean uses all)


def heat(std: torch.Tensor, vmax: float) -> torch.Tensor:
    """A std map [H, W] as a colour image [3, H, W] in [0, 1] (magma, 0 .. vmax)."""
    from matplotlib import colormaps
    rgba = colormaps["magma"]((std / vmax).clamp(0, 1).numpy())
    return torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float()


# ---- the page ------------------------------------------------------------------------------------------------------
CSS = """
body { font-family: sans-serif; margin: 16px; color: #222; background: #fff; }
table { border-collapse: collapse; margin-bottom: 16px; }
.wide { overflow-x: auto; max-width: 100%; }
img.plot { max-width: 100%; height: auto; }
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
.flag { color: #b00020; font-weight: bold; }
.real { display: flex; gap: 4px; border-left: 3px solid #1f77b4; padding-left: 4px; }
tr.strip > td { background: #f7f7fb; font-size: 12px; }
.strip .gens { flex-wrap: wrap; gap: 8px; }
.strip p, .strip ul { margin: 4px 0; }
.scale { display: inline-block; width: 80px; height: 10px; vertical-align: middle; border: 1px solid #999; }
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


def caption(report: Report, index: int, line: dict) -> str:
    if not ok(line):
        return "failed"
    activation = report.top.activation(index, line) if report.top is not None else None
    shown = f"<b>act {num(activation, 3)}</b><br>" if activation is not None else ""
    return (f"{shown}cos {num(line.get('cosine'))}<br>rel. L2 {num(line.get('rel_l2'), 3)}"
            f"{trust_caption(report, index, line)}")


def real_html(report: Report, index: int, target: str) -> str:
    """The top real images of a latent target (``--top-images``), each with its activation and file name."""
    top = report.top
    if top is None or index not in top.labels:
        return ""
    figures = "".join(figure_html(r.tile, f"<b>act {num(r.activation, 3)}</b><br>{html.escape(r.name)}",
                                  report.height, r.name) for r in top.best.get((index, target), []))
    return (f'<div class="real" title="the folder\'s images with the highest activation of '
            f'{html.escape(top.labels[index].get(target, ""))}">{figures}</div>')


def flags(report: Report, index: int, line: dict) -> tuple[bool, list[str]]:
    """Whether a generation is flagged as atypical of the prior, and the checks it fails."""
    reference = report.reference if index in report.against_reference else None
    return atypical(line, reference), disagreeing(line, report.check_cosine)


def trust_caption(report: Report, index: int, line: dict) -> str:
    """The prior score (with its percentile in the reference) and the checks, each flag in red."""
    parts, score = [], line.get("prior_score")
    high, failed = flags(report, index, line)
    if score is not None:
        rank = (f" (p{report.reference.rank(score):.0f})" if report.reference is not None and
                index in report.against_reference else "")
        text = f"prior {num(score, 3)}{rank}"
        parts.append(f'<span class="flag" title="above the reference\'s {PERCENTILE}th percentile '
                     f'({report.reference.threshold:.3f}): atypical of the prior">⚑ {text}</span>' if high else text)
    for name, check in (line.get("checks") or {}).items():
        agrees = {True: " ✓", False: " ✗"}.get(check.get("agrees"), "")
        parts.append(f"{html.escape(name)} {num(check.get('cosine'), 3)}{agrees}")
    if failed:
        parts.append(f'<span class="flag" title="feature matched, other networks disagree">⚑ '
                     f'{html.escape(", ".join(failed))} disagree{"s" if len(failed) == 1 else ""}</span>')
    return "".join(f"<br>{part}" for part in parts)


def sparkline(series: list[list[float]], height: int, name: str = "cosine", what: str = "cosine to the target at "
              "each guided iteration", bounds: tuple[float, float] | None = None) -> str:
    """Inline SVG: a value of each generation against guided iteration (the cosine; a particle run's effective sample
    size against step, ``bounds`` fixing the axis)."""
    values = [v for s in series for v in s]
    if not values:
        return ""
    (lo, hi), width = bounds or (min(values), max(values)), 140
    dx, dy = (width - 4) / max(1, max(len(s) for s in series) - 1), (height - 18) / ((hi - lo) or 1.0)
    lines = []
    for s in series:
        points = " ".join(f"{2 + dx * i:.1f},{height - 14 - dy * (v - lo):.1f}" for i, v in enumerate(s))
        lines.append(f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="1" opacity="0.7"/>')
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f"<title>{what} ({lo:.4f} .. {hi:.4f})</title>{''.join(lines)}"
            f'<text x="2" y="{height - 2}" font-size="10" fill="#555">{name}: {lo:.3f} .. {hi:.3f}</text></svg>')


def particles_html(lines: list[dict], height: int) -> str:
    """A particle run's target (``model.sampler``): its effective sample size over the steps (a fraction of the
    particles, 0 .. 1), the steps at which it was resampled, and its saved generations' final weights."""
    record = next((line["particles"] for line in lines if isinstance(line.get("particles"), dict)), None)
    if record is None:
        return ""
    curve = sparkline([record.get("ess") or []], height, "ESS", "effective sample size / particles after each step's "
                      "reweighting", (0.0, 1.0))
    weights = ", ".join(num(line.get("weight"), 3) for line in lines)
    steps = record.get("resampled") or []
    return (f'<figure>{curve}<figcaption>resampled at {len(steps)} step(s)<br>weights {html.escape(weights)}'
            f"</figcaption></figure>")


def run_cell(report: Report, index: int, target: str, vmax: float) -> str:
    cell = report.cells.get((index, target))
    if cell is None:
        return '<td class="none">not in this run</td>'
    run, height = report.runs[index], report.height
    parts = [figure_html(item, caption(report, index, line), height, f"{line['id']}_{line.get('sample', 0)}")
             for item, line in zip(cell.tiles, cell.lines)]
    parts.append(real_html(report, index, target))
    if cell.variation is not None:
        names = ["pixel", *report.extractors]
        measured = "".join(f"<br>{html.escape(name)} {num(cell.variation[name])}" for name in names)
        parts.append(figure_html(tile(heat(cell.variation["std"], vmax), height), f"std map{measured}", height,
                                 "per-pixel standard deviation across the generations"))
    curves = [run.trajectories.get((line["id"], line.get("sample", 0))) for line in cell.lines]
    parts.append(sparkline([[v for v in c["cosine"] if v is not None] for c in curves if c], height))
    parts.append(particles_html(cell.lines, height))
    return f'<td><div class="gens">{"".join(parts)}</div></td>'


def strip_maps(report: Report, target: str) -> list[tuple[str, torch.Tensor | str]]:
    """The std maps of a target's strip, as (name, map or why there is none): each run's (the baseline's last), then
    the reference run's."""
    out = []
    for i, run in enumerate(report.runs):
        cell = report.cells.get((i, target))
        name = "the unguided prior (baseline)" if report.baseline and i == len(report.runs) - 1 else run.label
        out.append((name, "not in this run" if cell is None else cell.variation["std"] if cell.variation is not None
                    else "fewer than two images" if sum(not isinstance(t, str) for t in cell.tiles) < 2
                    else "images of different sizes"))
    if report.reference_run is not None:
        out.append(("the reference", report.reference_maps.get(target, "no reference map (see the notes)")))
    return out


def scale_bar() -> str:
    """The strip's colour scale (magma) as a CSS gradient."""
    from matplotlib import colormaps
    stops = ", ".join("#%02x%02x%02x" % tuple(round(255 * c) for c in colormaps["magma"](x)[:3])
                      for x in np.linspace(0, 1, 8))
    return f'<span class="scale" style="background: linear-gradient(to right, {stops})"></span>'


def reference_lines(report: Report, target: str) -> str:
    """Per run with a std map, where it varies more or less than the reference's
    (:func:`.diversity.against_reference`)."""
    theirs = report.reference_maps.get(target)
    if theirs is None:
        return ""
    named = [(name, std) for name, std in strip_maps(report, target)[:-1] if not isinstance(std, str)]
    return "<ul>" + "".join(f"<li><b>{html.escape(name)}</b> {html.escape(against_reference(std, theirs))}</li>"
                            for name, std in named) + "</ul>"


def strip_row(report: Report, target: str) -> str:
    """A row under a target's: what varies across each run's images of it, side by side on one colour scale."""
    maps = strip_maps(report, target)
    vmax = max((float(std.max()) for _, std in maps if not isinstance(std, str)), default=0.0) or 1.0
    figures = "".join(figure_html(std if isinstance(std, str) else tile(heat(std, vmax), report.height),
                                  html.escape(name), report.height, f"std map of {name}") for name, std in maps)
    hint = ("" if report.baseline else "<p>The unguided prior's map needs <code>--baseline UNGUIDED_RUN_DIR</code>."
                                       "</p>")
    return (f'<tr class="strip"><td>what varies</td><td colspan="{len(report.runs)}"><div class="gens">{figures}</div>'
            f"<p>Per-pixel std across this target's images; one scale for the strip: black 0 {scale_bar()} yellow "
            f"{vmax:.3f}.</p>{hint}{reference_lines(report, target)}</td></tr>")


def targets_table(report: Report) -> str:
    maps = [float(c.variation["std"].max()) for c in report.cells.values() if c.variation]
    vmax = max(maps, default=0.0) or 1.0
    head = "".join(f"<th>{html.escape(run.label)}</th>" for run in report.runs)
    text = report.top.target_text if report.top is not None else str
    rows = [f"<tr><td>{html.escape(text(t))}{tile_html(report.target_tiles[t], report.height, t)}</td>"
            + "".join(run_cell(report, i, t, vmax) for i in range(len(report.runs))) + "</tr>" + strip_row(report, t)
            for t in report.targets]
    explained = (f"; the std map is the per-pixel standard deviation across a target's generations (black 0, yellow "
                 f"{vmax:.3f}, one scale for the page), with the mean pairwise RMS pixel difference and, per "
                 f"extractor, the mean pairwise 1 − cosine of the generations' features" if maps else "")
    return (f"<h2>Targets</h2><p>Each generation with its cosine and relative L2 to the target feature{explained}; the "
            f"curve is the cosine at each guided iteration (with particles, model.sampler, a second curve: the "
            f"target's effective sample size over the steps, the steps it was resampled at and the saved generations' "
            f"final weights); under each target, what varies: every run's std map side "
            f"by side (the unguided prior's and a reference sample's too when given).</p>"
            f"{top_legend(report)}{trust_legend(report)}"
            f'<div class="wide"><table><tr><th>target</th>{head}</tr>'
            f"{''.join(rows)}"
            f"</table></div>")


def top_legend(report: Report) -> str:
    """What the activations and the real images beside latent targets are."""
    top = report.top
    if top is None or not top.labels:
        return ""
    return (f"<p>act: the activation of the target's latent or channel (the run's extractor, on the saved 8-bit "
            f"image; a generation's is -loss); beside the generations (blue bar), the {top.top} image(s) of the "
            f"{top.count} in {html.escape(str(top.folder))} with the highest activation of it.</p>")


def trust_legend(report: Report) -> str:
    """What the prior scores and checks under the images mean, and where the reference comes from."""
    lines = [line for i in range(len(report.runs)) for line in run_lines(report, i)]
    parts = []
    if any(line.get("prior_score") is not None for line in lines):
        reference = report.reference
        parts.append("prior: the prior's own denoising error on the saved image (lower: more typical of the prior)" + (
            f"; (pN): its percentile among the {len(reference.scores)} scores of {html.escape(reference.source)}, "
            f"⚑ above the {PERCENTILE}th ({reference.threshold:.3f})" if reference is not None else
            "; no reference given (--reference)"))
    if any(line.get("checks") for line in lines):
        low = f", or whose cosine is below {report.check_cosine}" if report.check_cosine is not None else ""
        parts.append(f"checks: other networks' cosine between the generation's features and the target image's (✓ / ✗: "
                     f"the top-1 class agrees or not); ⚑ where one disagrees{low}: the feature may be matched, but "
                     f"other networks disagree")
    return f"<p>{'. '.join(parts)}.</p>" if parts else ""


def run_lines(report: Report, index: int) -> list[dict]:
    return [line for t in report.targets for line in getattr(report.cells.get((index, t)), "lines", [])]


def summary_table(report: Report) -> str:
    names = ["pixel", *report.extractors]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", "folder", "config", "generations", "mean cos",
                                                          "worst cos", "mean rel. L2", "s / generation",
                                                          "mean prior score", "⚑ prior", "⚑ checks",
                                                          *(f"diversity: {name}" for name in names)])
    rows = []
    for i, run in enumerate(report.runs):
        stats = run_stats(run_lines(report, i))
        measured = [c.variation for (j, _), c in report.cells.items() if j == i and c.variation]
        checked = [line for line in run_lines(report, i) if ok(line) and line.get("checks")]
        flagged = [flags(report, i, line) for line in run_lines(report, i) if ok(line)]
        numbers = [f"{stats['generations']}" + (f" ({stats['failed']} failed)" if stats["failed"] else ""),
                   num(stats["mean_cosine"]), num(stats["worst_cosine"]), num(stats["mean_rel_l2"]),
                   num(stats["mean_seconds"], 2), num(stats["mean_prior_score"]),
                   f"{sum(high for high, _ in flagged)}" if i in report.against_reference else "–",
                   f"{sum(bool(failed) for _, failed in flagged)}" if checked else "–",
                   *(num(mean([v[name] for v in measured])) for name in names)]
        config = "<br>".join(html.escape(line) for line in config_summary(run.config))
        numbers = "".join(f'<td class="num">{n}</td>' for n in numbers)
        rows.append(f"<tr><td>{html.escape(run.label)}</td><td>{html.escape(str(run.path))}</td>"
                    f'<td class="config">{config}</td>{numbers}</tr>')
    return (f"<h2>Runs</h2><p>Over the generations of the {len(report.targets)} target(s) shown; diversity: the mean "
            f'over targets with two or more generations.</p><div class="wide"><table><tr>{head}</tr>'
            f"{''.join(rows)}</table></div>")


def histogram_figure(report: Report):
    """The cosines of each compared run (the baseline's are in the table: they would squeeze the others), counted on an
    axis of whole numbers; None when there are none."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    compared = report.runs[:-1] if report.baseline else report.runs
    values = {run.label: [line["cosine"] for line in run_lines(report, i)
                          if ok(line) and line.get("cosine") is not None]  # null: no cosine (an all-zero target)
              for i, run in enumerate(compared)}
    every = [v for vs in values.values() for v in vs]
    if not every:
        return None
    lo, hi = min(every), max(every)
    bins = np.linspace(lo - 1e-3 * (lo == hi), hi + 1e-3 * (lo == hi), 31)
    fig = Figure(figsize=(7, 2.8))
    ax = fig.subplots()
    for label, vs in values.items():
        ax.hist(vs, bins=bins, histtype="step", linewidth=1.5, label=label)
    ax.set(xlabel="cosine to target", ylabel="generations")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig


def histogram(report: Report) -> str:
    fig = histogram_figure(report)
    return ("" if fig is None else
            f'<h2>Cosine to target</h2><img class="plot" src="{figure_uri(fig)}" alt="histogram of cosines per run">')


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
        best = [(i, t[name][i]) for t, step in found if (i := best_iteration(t, step)) is not None]
        if best:
            ax.scatter(*zip(*best), marker="v", s=16, color="k", zorder=3, label="best image")
        if name == "loss" and np.nanmin(padded) > 0:
            ax.set_yscale("log")
        ax.set(title=f"{run.label}: {name}", xlabel="guided iteration")
        ax.legend(fontsize=8)
    return f'<img class="plot" src="{figure_uri(fig)}" alt="trajectories of {html.escape(run.label)}">'


def html_page(report: Report) -> str:
    notes = ("<ul class=\"notes\">" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>"
             if report.notes else "")
    trajectories = "".join(trajectory_plot(report, i) for i in range(len(report.runs)))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>lit_featinv report</title>'
            f"<style>{CSS}</style></head><body><h1>lit_featinv report</h1>{notes}{summary_table(report)}"
            f"{targets_table(report)}{histogram(report)}<h2>Trajectories</h2>{trajectories}</body></html>\n")
