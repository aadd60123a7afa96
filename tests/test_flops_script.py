"""benchmarks/flops.py (issue 9, item 4): FLOPs of a guided iteration counted on fake tensors; smoke test on tiny
configs and the counter checked on ops whose FLOPs are known."""
import os
import re
import subprocess
import sys

import torch

from conftest import ROOT


def test_the_counter_counts_matmuls_and_convolutions_under_autograd():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from flops import Flops
    x = torch.randn(2, 3, requires_grad=True)
    w = torch.randn(4, 3)
    with Flops() as forward:
        y = torch.nn.functional.linear(x, w)
    assert forward.get_total_flops() == 2 * 2 * 3 * 4
    with Flops() as backward:
        torch.autograd.grad(y.sum(), x)  # d/dx: one [2, 4] x [4, 3] matmul
    assert backward.get_total_flops() == 2 * 2 * 4 * 3
    with Flops() as conv:
        torch.nn.functional.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3))
    assert conv.get_total_flops() == 2 * 3 * 3 * 3 * 2 * 3 * 3  # 2 x out elements (3x3x3) x in x kernel (2x3x3)


def test_flops_script_tiny_counts_every_extractor_and_variant(tmp_path):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "benchmarks/flops.py", "--tiny", "--out", str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = (tmp_path / "flops-tiny.md").read_text()
    per = {(m[1], m[2]): float(m[3].replace(",", "")) for m in
           re.finditer(r"^\| (.+?) \| (unet_gradient|clean_estimate) \| ([0-9.,e+]+) \|", text, re.M)}
    assert len(per) == 8 and all(v > 0 for v in per.values()), text
    for (name, variant), flops in per.items():  # no UNet backward: fewer FLOPs
        if variant == "clean_estimate":
            assert flops < per[name, "unet_gradient"], text
    assert re.search(r"^\| paper/resnet50 \| 12,960 \| [0-9.,e+]+ \| 1/1 \|$", text, re.M), text
