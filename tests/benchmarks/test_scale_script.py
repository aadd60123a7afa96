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
    28 px), a tiny open_clip ViT (patch 14, 28 px; also for SigLIP's open_clip preset)."""
    import gpu
    folder = tmp_path_factory.mktemp("tiny_clip_vit")
    register_tiny_clip_vit(folder)
    dinov2 = dict(img_size=28, embed_dim=32, depth=1, num_heads=2)
    timm_vit = lambda family: lambda: gpu.modern_extractor(  # noqa: E731
        family, model_name="vit_base_patch14_dinov2", model_kwargs=dinov2, preprocess={"resize": 28, "crop": 28})
    clip_vit = lambda family: lambda: gpu.modern_extractor(family, model_name="tiny-clip-vit")  # noqa: E731
    return {"sdxl": ("tiny resnet", lambda: gpu.modern_extractor("sdxl", model_name="tiny_resnet",
                                                                  preprocess={"resize": 32, "crop": 32})),
            "sd3": ("tiny dinov2", timm_vit("sd3")), "flux": ("tiny clip vit", clip_vit("flux")),
            "sdxl_turbo": ("tiny clip vit", clip_vit("sdxl_turbo")),
            "sd35_large_turbo": ("tiny clip vit", clip_vit("sd35_large_turbo")),
            "flux_schnell": ("tiny dinov2", timm_vit("flux_schnell"))}


GUIDED, FEW_STEP = ("sdxl", "sd3", "flux"), ("sdxl_turbo", "sd35_large_turbo", "flux_schnell")


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
    assert scale.main(["--tiny", "--out", str(tmp_path), "--families", ",".join(GUIDED), "--resolutions", "1024",
                       "--batches", "4", "--checkpointing", "on"], extractors=tiny_modern_extractors) == 0
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
                         r"24 GB \| (\d+(?: \+ \d unguided)?) \| [0-9.,]+ \| 1/[0-9,]+ \|$", text, re.M)
    # K = 4 at each step; flow matching's first step (sigma = 1) one unguided iteration, as the loop runs it
    assert presets == [("modern/sdxl_resnet50", "200"), ("modern/sd35_medium_dinov2", "156 + 1 unguided"),
                       ("modern/flux_dev_clip", "108 + 1 unguided")], text
    rows = {r["family"]: r for r in rows if r["variant"] == "unet_gradient"}
    assert rows["sdxl"]["unguided_iterations"] == 0 and "gflops_unguided" not in rows["sdxl"]
    for family in ("sd3", "flux"):  # a forward and a decode: less than a guided iteration
        assert 0 < rows[family]["gflops_unguided"] < rows[family]["gflops"] / 2

    assert scale.main(["--tiny", "--out", str(tmp_path), "--families", "flux", "--resolutions", "512",
                       "--variants", "unet_gradient", "--held", "fp32"], extractors=tiny_modern_extractors) == 0
    rows = {(r["batch"], r["ckpt"]): r for r in map(json.loads, (tmp_path / "scale.jsonl").read_text().splitlines())}
    assert sorted(rows) == [(1, "off"), (1, "on"), (4, "off"), (4, "on")] and "peak_bf16" not in rows[1, "on"]
    for batch in (1, 4):  # checkpointing keeps fewer activations and recomputes the forward
        assert rows[batch, "on"]["created_fp32"] < rows[batch, "off"]["created_fp32"]
        assert rows[batch, "on"]["gflops"] > rows[batch, "off"]["gflops"]
    assert rows[4, "off"]["created_fp32"] > rows[1, "off"]["created_fp32"]


@pytest.mark.slow  # 89 s of the suite on a slow day: pytest -m slow
def test_scale_script_estimates_noise_optimisation_of_the_few_step_presets(tmp_path, tiny_modern_extractors):
    """SDXL-Turbo, SD 3.5 Large Turbo and FLUX.1-schnell with their presets' NoiseOptimization: each preset at its
    resolution, batch 1 and 4, checkpointing as the presets (prior + sampler), a row per case and one per preset with
    the ratio to the authors' FLOPs; then on one prior the three checkpointing settings."""
    import scale
    for families, resolution, ckpt in (("sdxl_turbo", 512, "off"), ("sd35_large_turbo,flux_schnell", 1024, "on")):
        out = tmp_path / str(resolution)
        assert scale.main(["--tiny", "--out", str(out), "--families", families, "--resolutions", str(resolution),
                           "--batches", "1,4", "--checkpointing", ckpt], extractors=tiny_modern_extractors) == 0
        rows = [json.loads(line) for line in (out / "scale.jsonl").read_text().splitlines()]
        assert [(r["family"], r["batch"], r["variant"]) for r in rows] == [
            (f, b, v) for f in families.split(",") for v in ("noise_optimization", "noise_optimization+tiny_decoder")
            for b in (1, 4)]
        for r in rows:
            assert "error" not in r and r["gflops_step"] > r["gflops_last"] > 0, r
            assert r["tflops_image"] == pytest.approx((r["optimization_steps"] * r["gflops_step"] + r["gflops_last"])
                                                      / r["batch"] / 1e3)
            assert r["resident_bf16"] < r["resident_fp32"] and r["peak_bf16"] < r["peak_fp32"]
        one, four = rows[0], rows[1]
        assert four["created_fp32"] > one["created_fp32"] and four["gflops_step"] > 3 * one["gflops_step"]
        for vae, tiny in zip(rows[::4] + rows[1::4], rows[2::4] + rows[3::4]):  # the tiny decoder in the gradient
            assert tiny["variant"].endswith("+tiny_decoder") and tiny["batch"] == vae["batch"]
            assert tiny["gflops_last"] == vae["gflops_last"] and tiny["gflops_step"] != vae["gflops_step"]
        text = (out / "scale.md").read_text()
        assert "the authors' FLOPs per image: 1.144e+05 TFLOPs, paper/resnet50" in text
        assert "| GFLOPs / guided iteration |" not in text  # no guided case: no guided table
        assert "## The few-step presets against the authors', the paper presets and ReNO" in text
        assert len(re.findall(r"^- modern/\w+ \(.+\): [0-9,]+ TFLOPs per image .+ of the authors': meets the goal\.$",
                              text, re.M)) == len(families.split(","))  # tiny models
        assert len(re.findall(rf"^\| [\w .-]+ \| {resolution} \| [14] \| {ckpt} \| (25 Adam steps x 1 step|30 Adam "
                              r"steps x 4 steps)(, tiny decoder)? \| ([0-9.]+ / [0-9.]+ \| ){3}24 GB \| 24 GB \| [0-9,]+ \| [0-9,]+ \| "
                              r"[0-9.,]+ \|$", text, re.M)) == len(rows), text
        presets = re.findall(rf"^\| (modern/\w+) \| {resolution} \| {ckpt} \| (fp32|bf16) \| [0-9.]+ \(24 GB\) \| "
                             r"[0-9.]+ \(24 GB\) \| ([14]) \| (\d+ x \d \(\d+ forwards, \d+ backwards\)) \| "
                             r"[0-9.,]+ \| 1/[0-9,]+ \| yes \|$", text, re.M)
        assert presets == {512: [("modern/sdxl_turbo_clip", "bf16", "4", "25 x 1 (26 forwards, 25 backwards)")],
                           1024: [("modern/sd35_large_turbo_siglip", "bf16", "1",
                                   "30 x 4 (124 forwards, 120 backwards)"),
                                  ("modern/flux_schnell_dinov2", "bf16", "1",
                                   "30 x 4 (124 forwards, 120 backwards)")]}[resolution], text

    assert scale.main(["--tiny", "--out", str(tmp_path), "--families", "flux_schnell", "--resolutions", "512",
                       "--batches", "1", "--held", "fp32"], extractors=tiny_modern_extractors) == 0
    rows = {r["ckpt"]: r for r in map(json.loads, (tmp_path / "scale.jsonl").read_text().splitlines())}
    assert sorted(rows) == ["off", "on", "prior"] and all("error" not in r for r in rows.values())
    # the prior's checkpointing recomputes each denoiser block and the VAE once; the sampler's around each call
    # recomputes the whole call once more (nested); the last pass has no backward: no recompute
    assert rows["off"]["gflops_step"] < rows["prior"]["gflops_step"] < rows["on"]["gflops_step"]
    assert rows["off"]["gflops_last"] == rows["prior"]["gflops_last"] == rows["on"]["gflops_last"]
    assert rows["prior"]["created_fp32"] < rows["off"]["created_fp32"]
    assert rows["on"]["created_fp32"] <= rows["prior"]["created_fp32"]
    text = (tmp_path / "scale.md").read_text()
    assert re.search(r"^\| FLUX.1-schnell \| 512 \| 1 \| prior only \| 30 Adam steps x 4 steps \|", text, re.M), text


@pytest.mark.parametrize("family,variant", [(f, "noise_optimization") for f in FEW_STEP]
                         + [("sdxl_turbo", "noise_optimization+tiny_decoder")])
def test_noise_estimate_counts_the_flops_that_generate_runs(family, variant, tmp_path, tiny_modern_extractors):
    """The fake-tensor estimate of an Adam step's pass + the last pass counts the FLOPs of the real
    ``NoiseOptimization.generate`` with one Adam step on real tiny models (the same sampler, decode, extractor,
    backward and best-image scoring; the Adam update and the bookkeeping count none)."""
    import gpu
    from scale import Meter, estimate_noise
    from torch._subclasses.fake_tensor import FakeTensorMode
    folder = gpu.save_modern_folder(family, tmp_path / family)
    prior = gpu.modern_prior(family, folder, 64, *gpu.modern_models(family, "tiny"))
    gpu.set_checkpointing(prior, True)
    extractor = tiny_modern_extractors[family][1]()
    module = gpu.modern_module(family, prior, extractor, variant, True)
    assert (module.sampler.decoder is not None) == variant.endswith("+tiny_decoder")
    module.sampler.optimization_steps = 1
    with torch.no_grad():
        dim = extractor.measure(torch.rand(1, 3, 64, 64)).shape[1]
    estimated = estimate_noise(module, 2, dim, FakeTensorMode(allow_non_fake_inputs=True), True)
    with Meter() as meter, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = module.generate(torch.randn(2, dim), [0, 1])  # -> NoiseOptimization.generate
    steps = module.num_inference_steps  # one Adam step: a backward through each sampler step
    assert out["image"].shape == (2, 3, 64, 64) and out["unet_backward"].tolist() == [steps, steps]
    assert meter.flops == pytest.approx((estimated["gflops_step"] + estimated["gflops_last"]) * 1e9, rel=1e-9)


@pytest.mark.slow  # 90 s of the suite (bf16) on a slow day; .ci/run runs it in its slow step
@pytest.mark.parametrize("held", ["bf16", "fp32,bf16"])  # fp32: no cast
def test_gpu_script_modern_measures_every_case_on_tiny_models(tmp_path, tiny_modern_extractors, held):
    import gpu
    assert gpu.main(["--modern", "--tiny", "--device", "cpu", "--warmup", "0", "--iters", "1", "--resolutions", "64",
                     "--batches", "2", "--held", held, "--checkpointing", "off,on,prior", "--out",
                     str(tmp_path)], modern_extractors=tiny_modern_extractors) == 0
    rows = [json.loads(line) for line in (tmp_path / "gpu-modern.jsonl").read_text().splitlines()]
    cases = [(f, h, v, c) for f in GUIDED for h in held.split(",")
             for v in ("unet_gradient", "clean_estimate") for c in ("off", "on")]
    cases += [(f, h, v, c) for f in FEW_STEP for h in held.split(",")
              for v in ("noise_optimization", "noise_optimization+tiny_decoder") for c in ("off", "on", "prior")]
    assert [(r["family"], r["held"], r["variant"], r["ckpt"]) for r in rows] == cases
    assert all(r["finite"] and r["batch"] == 2 and "error" not in r for r in rows), rows
    assert all(r["ms"] > 0 for r in rows if r["family"] in GUIDED)
    noise = [r for r in rows if r["family"] in FEW_STEP]
    assert all(r["ms_last"] > 0 and r["ms_image"] > 0 and r["optimization_steps"] in (25, 30) for r in noise), noise
    text = (tmp_path / "gpu-modern.md").read_text()
    assert "- command: `python benchmarks/gpu.py --modern --tiny --device cpu" in text
    assert len(re.findall(r"^\| [\w .-]+ \| 64 \| (fp32|bf16) \| \w+ \| bf16 autocast \| 2 \| (on|off) \| [0-9.]+ \| "
                          r"[0-9.]+ \| n/a \| n/a \| n/a \| n/a \|  \|$", text, re.M)) == len(rows) - len(noise)
    assert len(re.findall(r"^\| [\w .-]+ \| 64 \| (fp32|bf16) \| noise_optimization(\+tiny_decoder)? x (25|30) \| "
                          r"bf16 autocast \| 2 \| "
                          r"(on|off|prior) \| -?[0-9.]+ \| [0-9.]+ \| [0-9.]+ \| n/a \| n/a \| n/a \| n/a \|  \|$",
                          text, re.M)) == len(noise), text
