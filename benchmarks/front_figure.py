"""The README's and the site's front figure: a run's grids (target | generations, with their cosine) side by side.

    lit-featinv predict --config quickstart --threads 2 --trainer.default_root_dir runs/qs/t2
    python benchmarks/front_figure.py runs/qs/t2 docs/quickstart.png --columns 4
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (its grids/)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--gap", type=int, default=8)
    args = parser.parse_args()
    grids = [Image.open(p).convert("RGB") for p in sorted((args.run / "grids").glob("*.png"))]
    if not grids:
        raise SystemExit(f"{args.run / 'grids'}: no grids")
    w, h = max(g.width for g in grids), max(g.height for g in grids)
    rows = -(-len(grids) // args.columns)
    sheet = Image.new("RGB", (args.columns * (w + args.gap) - args.gap, rows * (h + args.gap) - args.gap), "white")
    for i, grid in enumerate(grids):
        sheet.paste(grid, ((i % args.columns) * (w + args.gap), (i // args.columns) * (h + args.gap)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, {len(grids)} grids)")


if __name__ == "__main__":
    main()
