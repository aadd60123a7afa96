"""benchmarks/gpu.py (issue 9, item 5) on the CPU with tiny stand-ins: the same prior loading, guidance variants, tiny
decoder, checkpointing, throughput options and table, in seconds."""
import json
import re
import sys

from conftest import ROOT, save_tiny_decoder, tiny_paper_extractors


def test_gpu_script_measures_every_case_on_tiny_models(tmp_path, sd_prior, open_clip_name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu
    tiny = save_tiny_decoder(tmp_path / "taesd", channels=3)
    extractors = tiny_paper_extractors(open_clip_name)  # gpu.py's default --extractors: all but vit_h14_518
    assert gpu.main(["--device", "cpu", "--iters", "1", "--out", str(tmp_path), "--sd", str(sd_prior),
                     "--tiny-decoder", str(tiny), "--compile-backend", "eager"], extractors=extractors) == 0
    rows = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    names = ("clip_rn50", "resnet50", "vit_h14_518_bf16")
    cases = [(v, e, b, c) for e in names for v in gpu.VARIANTS for c in ("off", "on") for b in (1, 4)]
    assert [(r["variant"], r["extractor"], r["batch"], r["ckpt"]) for r in rows[:len(cases)]] == cases
    assert [r["options"] for r in rows[len(cases):]] == ["none", "channels_last", "channels_last + compile (eager)"]
    assert all(r["finite"] and r["ms"] > 0 and "error" not in r for r in rows)
    text = (tmp_path / "gpu.md").read_text()
    assert "- command: `python benchmarks/gpu.py --device cpu" in text
    assert len(re.findall(r"^\| \w+(\+tiny_decoder)? \| \w+ \| bf16 autocast \| [14] \| (on|off) \| .+ \| [0-9.]+ \| "
                          r"[0-9.]+ \| n/a \| n/a \| n/a \| n/a \|  \|$", text, re.M)) == len(rows)


def test_modern_few_step_families_are_the_published_models_and_presets():
    """benchmarks/gpu.py's full-size SD 3.5 Large (Turbo) transformer is the published one (its state dict: the
    16,292,561,536 bytes of the Large Turbo transformer's bf16 safetensors index), FLUX.1-schnell's is FLUX.1-dev's
    without the guidance embedder, the few-step schedulers are the ones tests/tiny_pipelines.py quotes, and the
    families run their presets' noise optimisation."""
    import diffusers
    import torch
    from tiny_pipelines import FLUX_SCHNELL_SCHEDULER, SD35_TURBO_SCHEDULER, SDXL_TURBO_SCHEDULER
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu
    with torch.device("meta"):
        large = diffusers.SD3Transformer2DModel(**gpu.SD35_LARGE)
    assert 2 * sum(v.numel() for v in large.state_dict().values()) == 16_292_561_536
    assert gpu.FLUX_SCHNELL == gpu.FLUX_DEV | {"guidance_embeds": False} and gpu.MODERN["sdxl_turbo"]["config"] == \
        gpu.SDXL_UNET
    for family, quoted in (("sdxl_turbo", SDXL_TURBO_SCHEDULER), ("sd35_large_turbo", SD35_TURBO_SCHEDULER),
                           ("flux_schnell", FLUX_SCHNELL_SCHEDULER)):
        assert gpu.MODERN[family]["scheduler"] == {k: v for k, v in quoted.items() if k != "_diffusers_version"}
    settings = {f: gpu.modern_settings(f) for f in ("sdxl_turbo", "sd35_large_turbo", "flux_schnell")}
    assert {f: (s["steps"], s["resolution"], s["batch"], s["held"], s["sampler"], s["guidance"],
                s["sampler_args"]["optimization_steps"]) for f, s in settings.items()} == {
        "sdxl_turbo": (1, 512, 4, "bf16", "NoiseOptimization", None, 25),
        "sd35_large_turbo": (4, 1024, 1, "bf16", "NoiseOptimization", None, 30),
        "flux_schnell": (4, 1024, 1, "bf16", "NoiseOptimization", None, 30)}
    assert [gpu.family_variants(f, gpu.ALL_VARIANTS) for f in ("flux", "flux_schnell")] == [
        ["unet_gradient", "clean_estimate"], ["noise_optimization", "noise_optimization+tiny_decoder"]]
