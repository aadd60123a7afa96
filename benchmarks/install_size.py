"""What the README's install line costs on disk (issue 37): a fresh virtual environment, ``pip install -e ".[test]"``
from this clone, then the size of the environment and of its largest packages.

    python benchmarks/install_size.py --out benchmarks/results/install.md

It installs whatever the configured package index serves (here: PyPI's Linux x86-64 wheels, torch with CUDA).
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        start = time.perf_counter()
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", ".[test]"], cwd=ROOT, check=True)
        seconds = time.perf_counter() - start
        site = next((venv / "lib").glob("python3*/site-packages"))
        versions = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch, diffusers, lightning; "
                                   "print(torch.__version__, diffusers.__version__, lightning.__version__)"],
                                  capture_output=True, text=True, check=True).stdout.split()
        total = size(venv)
        parts = {name: size(site / name) for name in ("nvidia", "triton", "torch")}
        rest = total - sum(parts.values())
    gb = lambda n: f"{n / 1e9:.2f} GB"  # noqa: E731
    rows = "\n".join(f"| `site-packages/{name}` | {gb(n)} |" for name, n in parts.items())
    args.out.write_text(f"""# Install size

Command: `python benchmarks/install_size.py --out {args.out}` ({date.today()}; {platform.machine()}, Python
{platform.python_version()}; wheels from the configured index, already in pip's cache; torch {versions[0]},
diffusers {versions[1]}, lightning {versions[2]}). A fresh virtual environment, then `pip install -e ".[test]"` (the
README's GPU line: PyPI's torch for Linux x86-64 is the CUDA build), {seconds:.0f} s. Sizes are the files' bytes.

| what | size |
| --- | --- |
| the whole virtual environment | {gb(total)} |
{rows}
| everything else | {gb(rest)} |

The CPU line (PyTorch's CPU wheels from download.pytorch.org) was not measured: that index is not reachable from
this machine.
""")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
