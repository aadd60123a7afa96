"""benchmarks/flops.py (issue 9, item 4): FLOPs of a guided iteration counted on fake tensors; smoke test on tiny
configs and the counter checked on ops whose FLOPs are known."""
import re
import sys

import torch

from conftest import ROOT, save_tiny_decoder, tiny_paper_extractors


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


def test_flops_script_counts_every_extractor_and_variant_on_tiny_models(tmp_path, sd_prior, open_clip_name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import flops
    extractors = tiny_paper_extractors(open_clip_name)
    tiny = save_tiny_decoder(tmp_path / "taesd", channels=3)
    assert flops.main(["--out", str(tmp_path), "--sd", str(sd_prior), "--tiny-decoder", str(tiny)],
                      extractors=extractors) == 0
    text = (tmp_path / "flops.md").read_text()
    per = {(m[1], m[2]): [float(v.replace(",", "")) for v in m.group(3, 4, 5)] for m in
           re.finditer(r"^\| (tiny [\w ]+) \| ([\w+]+) \| ([0-9.,e+]+) \| ([0-9.,e+]+) \| ([0-9.,e+]+) \|$", text, re.M)}
    assert len(per) == 16 and all(v > 0 for row in per.values() for v in row), text
    for (name, variant), (iteration, network, decode) in per.items():
        if variant.startswith("clean_estimate"):  # no UNet backward: fewer FLOPs
            assert iteration < per[name, variant.replace("clean_estimate", "unet_gradient")][0], text
    assert re.search(r"^\| paper/resnet50 \| unet_gradient \| 12,960 \| 2 \| [0-9.,e+]+ \| 1/1 \|$", text, re.M), text
    assert len(re.findall(r"^\| paper/\w+_fast \| ", text, re.M)) == 3 * 4
