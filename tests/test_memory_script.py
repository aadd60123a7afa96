"""benchmarks/memory.py (issue 3, item 4: peak GPU memory at full scale) runs end to end with --tiny on the CPU:
the same SD-folder build, StableDiffusionPrior loading, extractors and guided_output calls, on tiny configs."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

EXTRACTORS = ["clip_rn50", "resnet50", "vit_h14_518", "vit_h14_518_bf16"]


def test_memory_script_tiny_runs_every_case(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env |= {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "benchmarks/memory.py", "--tiny", "--out", str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cases = [(name, batch, ckpt) for name in EXTRACTORS for ckpt in ("off", "on") for batch in (1, 4)]
    for name, batch, ckpt in cases:  # one row per case, timed (a number of ms), memory n/a on the CPU
        row = (rf"^\| {name} \| bf16 autocast \| {batch} \| {ckpt} \| n/a \| n/a \| n/a \| n/a \| "
               r"[0-9.]+ \| [0-9.]+ \| n/a \|")
        assert re.search(row, result.stdout, re.M), f"no row for {name} batch {batch} ckpt {ckpt}:\n{result.stdout}"
    assert "command: `python benchmarks/memory.py --tiny" in result.stdout
    assert (tmp_path / "memory.md").read_text().count("| bf16 autocast |") == len(cases)
    rows = [json.loads(line) for line in (tmp_path / "memory.jsonl").read_text().splitlines()]
    assert [(r["extractor"], r["batch"], r["ckpt"]) for r in rows] == cases
    assert all(r["finite"] and r["ms"] > 0 and "error" not in r for r in rows)


def test_memory_estimate_tiny_counts_batch_and_checkpointing(tmp_path):
    """--estimate (fake tensors, no GPU): every case has a number; a larger batch needs more, gradient checkpointing
    of the UNet and VAE less, and the estimate is the resident weights plus the peak of the created tensors."""
    env = {k: v for k, v in os.environ.items() if k != "OUT"} | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "benchmarks/memory.py", "--tiny", "--estimate", "--out", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "# ESTIMATED peak memory" in (tmp_path / "memory-estimate.md").read_text()
    rows = {(r["extractor"], r["batch"], r["ckpt"]): r
            for r in map(json.loads, (tmp_path / "memory-estimate.jsonl").read_text().splitlines())}
    assert len(rows) == 16 and all("error" not in r for r in rows.values())
    for name in EXTRACTORS:
        for ckpt in ("off", "on"):
            assert rows[name, 4, ckpt]["activations_gib"] > rows[name, 1, ckpt]["activations_gib"]
        for batch in (1, 4):
            assert rows[name, batch, "on"]["activations_gib"] < rows[name, batch, "off"]["activations_gib"]
    for r in rows.values():
        assert r["est_peak_gib"] == pytest.approx(r["resident_gib"] + r["activations_gib"])
        assert r["activations_gib"] > 0 and r["resident_gib"] > 0


def test_peak_tensor_bytes_counts_frees_and_views():
    """The --estimate tracker: storages count once (views share them) and leave when freed, fake or real."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from memory import PeakTensorBytes
    for mode in (FakeTensorMode, None):
        with mode() if mode else torch.device("cpu"):
            with PeakTensorBytes() as tracker:
                a = torch.zeros(1000)          # 4000 bytes
                view = a[:10].view(2, 5)       # same storage
                b = torch.zeros(500)           # 2000 -> 6000 live
                del a, view
                c = torch.zeros(250, dtype=torch.float64)  # 2000 -> 4000 live
        assert (tracker.peak, tracker.now) == (6000, 4000), mode
        del b, c
        assert tracker.now == 0
