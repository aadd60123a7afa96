"""``lit-featinv report RUN_DIR [RUN_DIR ...]``: runs on the same targets side by side in one self-contained HTML
page (:mod:`lit_featinv.analysis.page`), and a PNG contact sheet with ``--sheet``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..analysis.page import html_page
from ..analysis.reading import Run, load_extractor, load_run
from ..analysis.report import TILE, build, contact_sheet
from ..analysis.top_images import TOP, add_top_images, image_files
from ..analysis.trust import load_reference
from ..errors import ConfigError

PREFIX = "lit-featinv report"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PREFIX, description="Runs on the same targets side by side, in one "
                                     "self-contained HTML page (and a PNG contact sheet).")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by lit-featinv predict")
    parser.add_argument("--out", help="the HTML file to write (default: RUN_DIR/report.html for one run folder, "
                        "report.html in the current folder for several)")
    parser.add_argument("--sheet", help="also write a PNG contact sheet here")
    parser.add_argument("--baseline", metavar="RUN_DIR", help="an unguided run of the same targets, in its own column")
    parser.add_argument("--extractor", nargs="+", action="extend", default=[], metavar="CONFIG.yaml",
                        help="feature extractors ({class_path, init_args}) to measure diversity in")
    parser.add_argument("--label", nargs="+", action="extend", metavar="NAME", help="one name per RUN_DIR")
    parser.add_argument("--tile", type=int, default=TILE, help=f"tile height in px (default {TILE})")
    parser.add_argument("--reference", metavar="RUN_DIR_OR_FILE", help="prior scores of real images to read each "
                        "generation's prior_score against (a JSON file of benchmarks/prior_score.py, or a run folder)")
    parser.add_argument("--reference-run", metavar="RUN_DIR", help="a run folder of the same targets whose images are "
                        "a reference sample of what the feature should allow (e.g. exact posterior samples, or the "
                        "real images nearest the target in feature space; config.yaml may be missing): its std map "
                        "joins each target's what-varies strip, and each run's is read against it")
    parser.add_argument("--check-cosine", type=float, metavar="C", help="also flag a generation whose check cosine "
                        "is below C (classifier checks are flagged when their class differs)")
    parser.add_argument("--top-images", metavar="FOLDER", help="real images (PNGs, searched recursively) to put "
                        "beside latent or channel targets (a run with loss lit_featinv.Activation): each target's "
                        "images with the highest activation of its latent, by the run's extractor")
    parser.add_argument("--top", type=int, default=TOP, metavar="N", help=f"real images per target with --top-images "
                        f"(default {TOP})")
    return parser.parse_args(argv)


def default_labels(paths: list[str]) -> list[str]:
    """Folder names; the paths as given where two share a name."""
    names = [Path(p).resolve().name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def load_optional(path: str | None, label: str, key: str, notes: list[str], needs_config: bool = True) -> Run | None:
    """The run folder of an option (``--baseline``, ``--reference-run``) if given and readable; else a note."""
    try:
        return load_run(path, label, key=key, needs_config=needs_config) if path is not None else None
    except ConfigError as err:
        notes.append(str(err))
        return None


def load_runs(args: argparse.Namespace) -> tuple[list[Run], Run | None, Run | None, list[str]]:
    """The runs that can be read, the baseline, the reference run, and a line for each one left out."""
    labels = args.label or default_labels(args.runs)
    if len(labels) != len(args.runs):
        raise ConfigError("report.label", f"{len(labels)} label(s) for {len(args.runs)} run folder(s); give one each")
    notes = []
    runs = [run for path, label in zip(args.runs, labels) if (run := load_optional(path, label, "report.runs", notes))]
    baseline = load_optional(args.baseline, "baseline", "report.baseline", notes)
    reference = load_optional(args.reference_run, "reference", "report.reference_run", notes, needs_config=False)
    return runs, baseline, reference, notes


def make_report(argv: list[str] | None = None) -> None:
    """Write the report; a line per input problem (stderr, and on the page); exit status 1 only if no run can be
    shown."""
    args = parse_args(argv)
    try:
        if args.tile < 8:
            raise ConfigError("report.tile", f"{args.tile} px is too small; give 8 or more")
        extractors = dict(load_extractor(path) for path in args.extractor)
        reference = load_reference(args.reference) if args.reference else None
        if args.top < 1:
            raise ConfigError("report.top", f"{args.top} images per target: give 1 or more")
        files = image_files(args.top_images) if args.top_images else None
        runs, baseline, reference_run, notes = load_runs(args)
    except ConfigError as err:
        raise SystemExit(f"{PREFIX}: error: {err}") from None
    if not runs and baseline is not None:
        runs, baseline = [baseline], None
    if not runs:
        for note in notes:
            print(f"{PREFIX}: {note}", file=sys.stderr)
        raise SystemExit(f"{PREFIX}: error: report.runs: no run folder could be read; nothing written")
    report = build(runs, baseline, extractors, args.tile, notes, reference, args.check_cosine, reference_run)
    if files is not None:
        add_top_images(report, args.top_images, args.top, files=files)
    for note in report.notes:
        print(f"{PREFIX}: {note}", file=sys.stderr)
    one = Path(args.runs[0]) if len(args.runs) == 1 and Path(args.runs[0]).is_dir() else None
    out = Path(args.out) if args.out else (one or Path()) / "report.html"  # beside the run it reads
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_page(report), encoding="utf-8")
    print(f"{PREFIX}: wrote {out.resolve()}")
    if args.sheet:
        Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(report).save(args.sheet)
        print(f"{PREFIX}: wrote {Path(args.sheet).resolve()}")
