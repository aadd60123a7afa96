"""CPU threads (issue 11, item 3): how fast the quick start's guided loop runs with 1 thread, with as many threads as
cores (torch's default) and with ``threads: auto``, alone and beside another busy process; then the whole quick start
beside a busy process with torch's default count (what lit_featinv did before ``threads``) and with ``auto``.

    python benchmarks/threads.py --out benchmarks/results/threads.md    # about 15 minutes on 2 CPU cores

Run it on an otherwise idle machine. Each measurement is a fresh process. The busy processes: ``spinner`` is one
single-threaded Python loop (one core busy, as an editor's language server or a second Python job would keep it);
``torch job`` is a second torch process with torch's default threads multiplying matrices (as a second run or a test
suite would). Loop: the quick start's decoder (``FeatureInversion.from_config("quickstart")``) on its 8 targets,
4 DDIM steps x K = 4, timed per guided iteration (batch of 8) after the model loaded.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOADS = {
    "alone": None,
    "spinner": [sys.executable, "-c", "while True: pass"],
    "torch job": [sys.executable, "-c", "import torch\na = torch.rand(512, 512)\nwhile True: a = (a @ a).tanh()"],
}
STEPS, K = 4, 4


def child(threads: str) -> None:
    """Time the guided loop in this process with ``threads`` (a number or auto): prints threads and s/iteration."""
    from lit_featinv import FeatureInversion
    from lit_featinv.app import choose

    count, _ = choose(threads)
    decoder = FeatureInversion.from_config("quickstart", num_inference_steps=STEPS, recurrence=K, progress=False)
    images = ROOT / "assets" / "fmnist-test32"
    targets = sorted(images.iterdir())[:8]
    decoder(images=[str(targets[0])])  # warm-up: first-call costs are not the loop's
    start = time.perf_counter()
    decoder(images=[str(t) for t in targets])
    print(count, (time.perf_counter() - start) / (STEPS * K + 1))


def beside(load: str | None):
    """Start the busy process of ``load`` (None: nothing) and give it 2 s to get going."""
    if not LOADS[load]:
        return None
    busy = subprocess.Popen(LOADS[load], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    return busy


def measure_loop(load: str, threads: str) -> tuple[int, float]:
    busy = beside(load)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        done = subprocess.run([sys.executable, __file__, "--child", threads], capture_output=True, text=True,
                              env=env | {"HF_HUB_OFFLINE": "1"}, check=True)
    finally:
        if busy:
            busy.kill()
            busy.wait()
    count, seconds = done.stdout.split()[-2:]
    return int(count), float(seconds)


def measure_quickstart(load: str, threads: str) -> tuple[float, str]:
    """Seconds of the whole ``lit-featinv predict --config quickstart`` (a fresh folder) and its match line."""
    busy = beside(load)
    try:
        with tempfile.TemporaryDirectory() as folder:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "lit_featinv", "predict", "--config", "quickstart",
                                   "--threads", threads, "--trainer.enable_progress_bar", "false",
                                   "--model.init_args.progress", "false"], cwd=folder,
                                  capture_output=True, text=True, env=env | {"HF_HUB_OFFLINE": "1"}, check=True)
            seconds = time.perf_counter() - start
    finally:
        if busy:
            busy.kill()
            busy.wait()
    return seconds, next(line for line in done.stdout.splitlines() if "cosine to target" in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/threads.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    cores = len(os.sched_getaffinity(0))
    lines = [f"# CPU threads on {cores} cores", "", f"Command: `python benchmarks/threads.py --out {args.out}` "
             f"({time.strftime('%Y-%m-%d')}; torch default: {cores} threads).", "",
             f"Guided loop of the quick start, batch of 8, s per guided iteration ({STEPS} DDIM steps x K = {K}):", "",
             "| beside | 1 thread | " + f"{cores} threads (default) | auto (threads chosen) |", "| --- | --- | --- | --- |"]
    for load in LOADS:
        row = {t: measure_loop(load, t) for t in ("1", str(cores), "auto")}
        lines.append(f"| {load} | {row['1'][1]:.2f} | {row[str(cores)][1]:.2f} | {row['auto'][1]:.2f} "
                     f"({row['auto'][0]}) |")
        print(lines[-1], flush=True)
    lines += ["", "Whole quick start (`lit-featinv predict --config quickstart`, 8 targets, 50 steps x K = 4) beside "
              "the spinner (the images differ with the thread count: the float summation order; the match does not):", "",
              "| threads | seconds | match |", "| --- | --- | --- |"]
    for threads, label in ((str(cores), f"{cores} (torch's default: before `threads`)"), ("auto", "auto (after)")):
        seconds, last = measure_quickstart("spinner", threads)
        lines.append(f"| {label} | {seconds:.0f} | `{last.split('; ', 1)[-1]}` |")
        print(lines[-1], flush=True)
    seconds, last = measure_quickstart("alone", "auto")
    lines.append(f"| auto, alone | {seconds:.0f} | `{last.split('; ', 1)[-1]}` |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
