"""Load (issue 8, item 7): a run over many feature-file targets keeps memory flat and time per target constant, and
resuming it late costs seconds, not a re-scan of every PNG.

    python benchmarks/load.py --out runs/load          # about 6 minutes on 2 CPU cores; writes runs/load/load.md

Tiny random models (tests/conftest.py: the 16x16 pixel DDPM and timm ResNet), one DDIM step, K = 1, one generation
per target, 50 targets a batch, on the CPU with one thread: the cost is the tool's own (data, loop, writer, files),
not the models'. Targets are the rows of one [N, D] feature file (the extractor's features of random images).
Each run is ``lit-featinv predict`` in a fresh process:

- N = 100, 1,000 and 10,000 targets: peak RSS of the process (``os.wait4``), wall time, and targets per second in
  each tenth of the generations (10,000 only) (from the times at which metrics.jsonl grew, polled every 10 ms);
- the 10,000-target run again, stopped by SIGTERM once 9,000 generations are written, then rerun into the same
  folder: seconds from the rerun's start to its first new metrics line (the fresh run's start-up beside it) and in all.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import save_pixel_prior, save_timm  # noqa: E402  (the test suite's tiny models)

BATCH = 50


def build(folder: Path, count: int) -> Path:
    """Tiny models, ``count`` target features, a config; returns the config file."""
    from lit_featinv import TimmExtractor
    prior = folder / "prior" if (folder / "prior").exists() else save_pixel_prior(folder / "prior")
    timm_dir = folder / "timm" if (folder / "timm").exists() else save_timm(folder / "timm")
    extractor = TimmExtractor(f"local-dir:{timm_dir}")
    images = torch.rand(count, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    features = torch.cat([extractor.measure(chunk) for chunk in images.split(1000)])
    torch.save(features, folder / f"features{count}.pt")
    config = {
        "model": {"class_path": "lit_featinv.FeatureInversion", "init_args": {
            "prior": {"class_path": "lit_featinv.DiffusionPrior", "init_args": {"pretrained": str(prior)}},
            "extractor": {"class_path": "lit_featinv.TimmExtractor", "init_args": {"model_name": f"local-dir:{timm_dir}"}},
            "num_inference_steps": 1, "recurrence": 1, "samples_per_target": 1, "progress": False}},
        "data": {"class_path": "lit_featinv.TargetData", "init_args": {"features": str(folder / f"features{count}.pt"),
                                                                         "batch_size": BATCH}},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False},
    }
    path = folder / f"run{count}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Run:
    """``lit-featinv predict`` in a child process; :meth:`poll` records when metrics.jsonl gained lines."""

    def __init__(self, config: Path, out: Path):
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        os.sync()  # the files of a run before are on disk: each run pays for its own writes only
        self.metrics, self.offset, self.lines, self.times = out / "metrics.jsonl", 0, 0, []
        if self.metrics.exists():
            self.offset = self.metrics.stat().st_size
            self.lines = self.metrics.read_bytes().count(b"\n")
        self.start = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "lit_featinv", "predict", "--config", str(config),
                                      "--trainer.default_root_dir", str(out)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.rusage = None

    def poll(self) -> None:
        if self.metrics.exists() and self.metrics.stat().st_size > self.offset:
            with open(self.metrics, "rb") as f:
                f.seek(self.offset)
                new = f.read()
            self.offset += len(new)
            now = time.perf_counter() - self.start
            self.times += [now] * new.count(b"\n")
            self.lines += new.count(b"\n")

    def wait(self, stop_at: int | None = None) -> int:
        while True:
            self.poll()
            if stop_at is not None and self.lines >= stop_at and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                stop_at = None
            pid, status, self.rusage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.01)
        self.poll()
        self.seconds = time.perf_counter() - self.start
        self.stderr = self.proc.stderr.read()
        return self.proc.returncode

    @property
    def peak_rss_mib(self) -> float:
        return self.rusage.ru_maxrss / 1024  # KiB on Linux

    def rate(self, part: slice) -> float:
        """Targets per second over a part of the generations (by index into their times)."""
        times = self.times[part]
        return (len(times) - BATCH) / (times[-1] - times[0]) if len(times) > BATCH and times[-1] > times[0] else float("nan")


def compare(fresh: Path, resumed: Path) -> str:
    """The resumed folder against the uninterrupted run's: every PNG's bytes and one metrics line per generation."""
    pngs = sorted(p.relative_to(fresh) for p in fresh.rglob("*.png"))
    assert pngs == sorted(p.relative_to(resumed) for p in resumed.rglob("*.png"))
    differ = sum((fresh / p).read_bytes() != (resumed / p).read_bytes() for p in pngs)
    ids = [json.loads(line)["id"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    return (f"Its folder against the uninterrupted run's: {len(pngs):,} PNGs, {differ} differ; {len(ids):,} metrics lines, "
            f"{len(set(ids)):,} ids.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "load")
    parser.add_argument("--counts", default="100,1000,10000")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    counts = [int(c) for c in args.counts.split(",")]
    rows = ["| targets | peak RSS (MiB) | wall (s) | first line after (s) | targets/s, first tenth | targets/s, last tenth |",
            "| --- | --- | --- | --- | --- | --- |"]
    report = []

    def write() -> None:
        (args.out / "load.md").write_text("\n".join(rows + [""] + report) + "\n")

    for count in counts:
        config = build(args.out, count)
        run = Run(config, args.out / f"n{count}")
        assert run.wait() == 0, run.stderr[-3000:]
        tenth = count // 10
        rates = (f"{run.rate(slice(0, tenth)):.0f} | {run.rate(slice(-tenth, None)):.0f}" if tenth >= 10 * BATCH
                 else "- | -")  # too few batches to time
        rows.append(f"| {count:,} | {run.peak_rss_mib:.0f} | {run.seconds:.1f} | {run.times[0]:.1f} | {rates} |")
        print(rows[-1], flush=True)
        write()
    tenths = [run.rate(slice(i * tenth, (i + 1) * tenth)) for i in range(10)]
    lines = (args.out / f"n{count}" / "metrics.jsonl").read_text().splitlines()
    ms = [sum(json.loads(line)["seconds"] for line in part) / len(part) * 1000 for part in (lines[:tenth], lines[-tenth:])]
    report.append(f"Targets per second in each tenth of the {count:,}-target run: "
                  f"{', '.join(f'{r:.0f}' for r in tenths)}; inside `predict_step` (metrics `seconds`), first and last "
                  f"tenth: {ms[0]:.2f} / {ms[1]:.2f} ms per target (the rest is writing PNGs and lines).")
    count = counts[-1]
    out = args.out / f"resume{count}"
    first = Run(args.out / f"run{count}.yaml", out)
    code = first.wait(stop_at=count * 9 // 10)
    assert code == 128 + signal.SIGTERM, first.stderr[-3000:]
    stopped = first.lines
    again = Run(args.out / f"run{count}.yaml", out)
    assert again.wait() == 0, again.stderr[-3000:]
    assert again.lines == count, (again.lines, count)
    same = compare(args.out / f"n{count}", out)
    report.append(f"Resume: the {count:,}-target run stopped by SIGTERM with {stopped:,} generations written (exit "
                  f"{code}, {first.seconds:.1f} s); the rerun wrote its first new line {again.times[0]:.1f} s after its "
                  f"start (a fresh run: {run.times[0]:.1f} s) and the remaining {count - stopped:,} in "
                  f"{again.seconds:.1f} s in all; peak RSS {again.peak_rss_mib:.0f} MiB. {same}")
    report.append(f"\n`python benchmarks/load.py {' '.join(sys.argv[1:])}`, torch {torch.__version__}, "
                  f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}.")
    print("\n".join(report))
    write()


if __name__ == "__main__":
    main()
