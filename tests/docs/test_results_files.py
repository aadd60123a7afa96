"""The results-file check (issue 37): every number the documentation takes from a benchmark is traced to its file.

1. Every results file that README.md or a page (docs/*.md) names exists: links whose target goes through
   ``results/`` (``[benchmarks/results/<file>.md](results/x.md)``, resolved from the page's folder) and text that names
   ``benchmarks/results/...`` (resolved from the repository root).
2. A table right after the marker ``<!-- table from: results/X.md -->`` (relative to docs/; ``benchmarks/results/<X>.md``
   is read from the repository root, for README.md) is a copy of rows of X: its header and every body row are rows of
   a table in X, cell for cell (cells split on ``|`` and stripped). A page may leave rows and whole tables of X out.
3. docs/benchmarks.md has no table with digits that is not so marked (digits inside code spans and link targets do
   not count), unless marked ``<!-- table: not measured -->``.
"""
from __future__ import annotations

import glob
import re
from pathlib import Path

from conftest import ROOT, pages

DOCS = ROOT / "docs"
BENCHMARKS_PAGE = DOCS / "benchmarks.md"
MARKER = re.compile(r"^\s*<!--\s*table from:\s*(\S+?)\s*-->\s*$")
NOT_MEASURED = re.compile(r"^\s*<!--\s*table:\s*not measured\s*-->\s*$")
LINK = re.compile(r"\]\(([^)\s]+)\)")
MENTION = re.compile(r"benchmarks/results/[\w./*-]*")
SEPARATOR_CELL = re.compile(r"^:?-+:?$")


def cells(line: str) -> tuple[str, ...]:
    """A table row's cells, stripped (a `\\|` inside a cell is not a border)."""
    row = line.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return tuple(cell.strip() for cell in re.split(r"(?<!\\)\|", row))


def is_separator(row: tuple[str, ...]) -> bool:
    return all(SEPARATOR_CELL.match(cell) for cell in row)


def tables(text: str) -> list[tuple[int, str, list[tuple[int, str]]]]:
    """The Markdown tables of a text: (line number of the first row, the line before it, [(line number, row)])."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|"):
            start, rows = i, []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append((i + 1, lines[i]))
                i += 1
            if len(rows) >= 2 and is_separator(cells(rows[1][1])):
                found.append((start + 1, lines[start - 1] if start else "", rows))
        else:
            i += 1
    return found


def results_file(name: str) -> Path | None:
    """A marker's or link's results path: relative to docs/ (results/X.md), else to the repository root."""
    for base in (DOCS, ROOT):
        if (base / name).is_file():
            return base / name
    return None


def file_rows(path: Path) -> set[tuple[str, ...]]:
    return {cells(line) for _, _, rows in tables(path.read_text()) for _, line in rows}


def nearest(row: tuple[str, ...], known: set[tuple[str, ...]]) -> str:
    """The file's rows that share the most leading cells with a row that is not in it (to show what differs)."""
    def shared(other: tuple[str, ...]) -> int:
        return next((k for k, (a, b) in enumerate(zip(row, other)) if a != b), min(len(row), len(other)))
    best = sorted((other for other in known if shared(other)), key=shared, reverse=True)[:3]
    if not best:
        return "  (no row of the file begins with its first cell)"
    return "  the file's nearest rows:\n" + "\n".join(f"  {' | '.join(other)}" for other in best)


def test_named_results_files_exist():
    missing = []
    for page in pages():
        text = page.read_text()
        for target in LINK.findall(text):
            target = target.split("#")[0]
            if "results/" in target and "://" not in target and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)}: link to {target}")
        for name in MENTION.findall(text):
            name = name.rstrip(".")
            exists = glob.glob(str(ROOT / name)) if "*" in name else (ROOT / name).exists()
            if not exists:
                missing.append(f"{page.relative_to(ROOT)}: {name}")
    assert not missing, "results files named but not there:\n" + "\n".join(dict.fromkeys(missing))


def test_marked_tables_are_rows_of_their_files():
    marked = 0
    for page in pages():
        for start, before, rows in tables(page.read_text()):
            match = MARKER.match(before)
            if not match:
                continue
            marked += 1
            source = results_file(match.group(1))
            where = f"{page.relative_to(ROOT)}:{start - 1}"
            assert source is not None, f"{where}: the marker names {match.group(1)}, which is not a file"
            known = file_rows(source)
            for number, line in rows:
                row = cells(line)
                if is_separator(row) or row in known:
                    continue
                raise AssertionError(
                    f"{page.relative_to(ROOT)}:{number}: this row is not a row of {match.group(1)}:\n"
                    f"  {' | '.join(row)}\n" + nearest(row, known))
    assert marked, "no table is marked <!-- table from: results/... --> in README.md or docs/*.md"


def test_benchmark_tables_are_traced():
    untraced = []
    for start, before, rows in tables(BENCHMARKS_PAGE.read_text()):
        if MARKER.match(before) or NOT_MEASURED.match(before):
            continue
        text = "\n".join(line for _, line in rows)
        text = re.sub(r"`[^`]*`", "", LINK.sub("]", text))  # link targets and code spans are not measurements
        if re.search(r"\d", text):
            untraced.append(f"docs/benchmarks.md:{start}: {rows[0][1].strip()}")
    assert not untraced, ("tables with numbers but no <!-- table from: results/NAME.md --> on the line before:\n"
                          + "\n".join(untraced))
