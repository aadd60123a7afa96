"""benchmarks/scale.py (issue 20, item 6): memory and FLOPs of the modern presets' priors at scale on fake tensors,
and benchmarks/gpu.py --modern, which measures the same cases on a GPU; both on tiny stand-ins on the CPU (the priors'
own constructors on tiny folders, the full-size models swapped in: here tiny ones), and the meter checked on ops whose
FLOPs and bytes are known."""
import json
import re
import sys

import pytest
import torch

from conftest import ROOT, register_tiny_clip_vit

sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def tiny_modern_extractors(tmp_path_factory) -> dict:
    """Stand-ins for the modern presets' extractors, built as the scripts build the real ones (the preset's class,
    preprocessing and precision): a tiny torchvision ResNet, a tiny timm ViT of DINOv2's architecture (patch 14,
    28 px), a tiny open_clip ViT (patch 14, 28 px)."""
    import gpu
    folder = tmp_path_factory.mktemp("tiny_clip_vit")
    register_tiny_clip_vit(folder)
    dinov2 = dict(img_size=28, embed_dim=32, depth=1, num_heads=2)
    return {"sdxl": ("tiny resnet", lambda: gpu.modern_extractor("sdxl", model_name="tiny_resnet",
                                                                  preprocess={"resize": 32, "crop": 32})),
            "sd3": ("tiny dinov2", lambda: gpu.modern_extractor("sd3", model_name="vit_base_patch14_dinov2",
                                                                 model_kwargs=dinov2,
                                                                 preprocess={"resize": 28, "crop": 28})),
            "flux": ("tiny clip vit", lambda: gpu.modern_extractor("flux", model_name="tiny-clip-vit"))}


def test_the_meter_counts_fused_cpu_attention_and_the_peak_of_created_bytes():
    from scale import Meter
    q, k, v = (torch.randn(1, 2, 16, 8, requires_grad=True) for _ in range(3))
    with Meter() as forward:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # the CPU's fused kernel
    assert forward.flops == 2 * (2 * 1 * 2 * 16 * 16 * 8)  # q k^T and (softmax) v
    with Meter() as backward:
        torch.autograd.grad(out.sum(), (q, k, v))
    assert backward.flops == 5 * forward.flops // 2  # torch's formula: q k^T again, and four products for grads
    weight = torch.ones(64, 64)
    with Meter() as memory:
        a = torch.ones(256)  # 1 KiB
        b = a * 2  # 2 KiB alive
        views = weight.t(), a.view(16, 16), b.add_(1)  # no new storage
        del a, b, views
        c = torch.ones(128)  # 0.5 KiB
    assert memory.peak == 2048 and memory.now == 512
    del c


def test_cuda_norms_follow_cuda_autocast_and_cards_fit_as_memory_estimate():
    from scale import cuda_norms, fits
    x, norm = torch.randn(2, 8, dtype=torch.bfloat16), torch.nn.LayerNorm(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert norm(x).dtype == torch.bfloat16  # CPU autocast
        with cuda_norms():
            assert norm(x).dtype == torch.float32  # CUDA's float32 policy
            assert torch.nn.functional.group_norm(x.view(2, 8, 1), 2).dtype == torch.float32
    assert norm(x).dtype == torch.bfloat16 and torch.nn.functional.layer_norm is not None
    assert [fits(g) for g in (10, 30, 60, 100, 125, 200)] == ["24 GB", "48 GB", "80 GB", "141 GB", "141 GB, tight",
                                                              "none"]


def test_scale_script_estimates_every_case_on_tiny_models(tmp_path, tiny_modern_extractors):
    """The presets' own setting (1024 px, batch 4, checkpointing) for every prior, guidance and weight dtype; then
    checkpointing off and on, batch 1 and 4, on one prior (fake passes cost ~1 s each even for tiny models)."""
    import scale
    assert scale.main(["--tiny", "--out", str(tmp_path), "--resolutions", "1024", "--batches", "4",
                       "--checkpointing", "on"], extractors=tiny_modern_extractors) == 0
    rows = [json.loads(line) for line in (tmp_path / "scale.jsonl").read_text().splitlines()]
    cases = [(f, 1024, 4, "on", v) for f in ("sdxl", "sd3", "flux") for v in ("unet_gradient", "clean_estimate")]
    assert [(r["family"], r["resolution"], r["batch"], r["ckpt"], r["variant"]) for r in rows] == cases
    assert all("error" not in r and r["gflops"] > 0 and r["resident_bf16"] < r["resident_fp32"] for r in rows), rows
    assert all(r[f"peak_{h}"] == pytest.approx(r[f"resident_{h}"] + r[f"created_{h}"]) for r in rows for h in
               ("fp32", "bf16"))
    for unet, clean in zip(rows[::2], rows[1::2]):  # the denoiser's backward costs FLOPs
        assert unet["gflops"] > clean["gflops"]
    text = (tmp_path / "scale.md").read_text()
    assert "- command: `python benchmarks/scale.py --tiny --out" in text and "TINY stand-ins" in text
    assert len(re.findall(r"^\| (SDXL base 1.0|SD 3.5 medium|FLUX.1-dev) \| 1024 \| 4 \| on \| \w+ \| "
                          r"[0-9.]+ / [0-9.]+ \| [0-9.]+ / [0-9.]+ \| [0-9.]+ / [0-9.]+ \| 24 GB \| 24 GB \| [0-9,]+ \|$",
                          text, re.M)) == len(rows)
    presets = re.findall(r"^\| (modern/\w+) \| 1024 \| 4 \| on \| unet_gradient \| [0-9.]+ / [0-9.]+ \| 24 GB \| "
                         r"24 GB \| (\d+) \| [0-9.,]+ \|$", text, re.M)
    assert presets == [("modern/sdxl_resnet50", "200"), ("modern/sd35_medium_dinov2", "160"),
                       ("modern/flux_dev_clip", "112")], text

    assert scale.main(["--tiny", "--out", str(tmp_path), "--families", "flux", "--resolutions", "512",
                       "--variants", "unet_gradient", "--held", "fp32"], extractors=tiny_modern_extractors) == 0
    rows = {(r["batch"], r["ckpt"]): r for r in map(json.loads, (tmp_path / "scale.jsonl").read_text().splitlines())}
    assert sorted(rows) == [(1, "off"), (1, "on"), (4, "off"), (4, "on")] and "peak_bf16" not in rows[1, "on"]
    for batch in (1, 4):  # checkpointing keeps fewer activations and recomputes the forward
        assert rows[batch, "on"]["created_fp32"] < rows[batch, "off"]["created_fp32"]
        assert rows[batch, "on"]["gflops"] > rows[batch, "off"]["gflops"]
    assert rows[4, "off"]["created_fp32"] > rows[1, "off"]["created_fp32"]


def test_gpu_script_modern_measures_every_case_on_tiny_models(tmp_path, tiny_modern_extractors):
    import gpu
    assert gpu.main(["--modern", "--tiny", "--device", "cpu", "--warmup", "0", "--iters", "1", "--resolutions", "64",
                     "--batches", "2", "--held", "fp32,bf16", "--out", str(tmp_path)],
                    modern_extractors=tiny_modern_extractors) == 0
    rows = [json.loads(line) for line in (tmp_path / "gpu-modern.jsonl").read_text().splitlines()]
    cases = [(f, h, v, c) for f in ("sdxl", "sd3", "flux") for h in ("fp32", "bf16")
             for v in ("unet_gradient", "clean_estimate") for c in ("off", "on")]
    assert [(r["family"], r["held"], r["variant"], r["ckpt"]) for r in rows] == cases
    assert all(r["finite"] and r["ms"] > 0 and r["batch"] == 2 and "error" not in r for r in rows), rows
    text = (tmp_path / "gpu-modern.md").read_text()
    assert "- command: `python benchmarks/gpu.py --modern --tiny --device cpu" in text
    assert len(re.findall(r"^\| [\w .-]+ \| 64 \| (fp32|bf16) \| \w+ \| bf16 autocast \| 2 \| (on|off) \| [0-9.]+ \| "
                          r"[0-9.]+ \| n/a \| n/a \| n/a \| n/a \|  \|$", text, re.M)) == len(rows)
