"""FLOPs of a guided iteration at full scale, counted without a GPU (issue 9, item 4).

    python benchmarks/flops.py                 # about 5 minutes and 12 GB of memory on 2 CPU cores; writes runs/flops.md
    python benchmarks/flops.py --tiny          # a CPU smoke test of the script on tiny configs

One guided iteration (``FeatureInversion.guided_output``: UNet, VAE decoder, network, the backward of the guidance)
plus the scoring of its best-image candidates (decoder and network forward, no grad) of Stable Diffusion 1.5 at
512x512 (the random-weight SD-1.5-shaped folder of ``benchmarks/memory.py``) with each paper extractor (open_clip
RN50, torchvision ResNet-50, ViT-H/14 at 518 px, their presets' preprocessing), batch 1, for each guidance variant;
counted with ``torch.utils.flop_counter``'s formulas on fake tensors (``FakeTensorMode``: shapes only, no compute;
matmuls, convolutions and attention, which is nearly all of it). FLOPs per image of a preset = its guided iterations
x (one iteration + its candidates' scoring); the authors' configuration is 12,960 iterations (1000 DDPM steps, K = 8,
K = 1000 for the first 5) with the UNet gradient and two candidates per iteration.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import EXTRACTORS, PRIOR_SCHEDULER, build_sd_folder  # noqa: E402

from lit_featinv import CleanEstimateGradient, FeatureInversion, StableDiffusionPrior, UNetGradient  # noqa: E402
from lit_featinv.sampling import alpha_bar, fork  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GUIDANCE = {"unet_gradient": UNetGradient, "clean_estimate": CleanEstimateGradient}
AUTHORS = 12_960
# preset: (extractor, guidance, guided iterations per image, best-image candidates per iteration)
PRESETS = {
    "paper/clip_rn50": ("clip_rn50", "unet_gradient", AUTHORS, 2),
    "paper/resnet50": ("resnet50", "unet_gradient", AUTHORS, 2),
    "paper/vit_h14": ("vit_h14_518", "unet_gradient", AUTHORS, 2),
    "paper/clip_rn50_fast": ("clip_rn50", "unet_gradient", 200, 1),
    "paper/resnet50_fast": ("resnet50", "unet_gradient", 200, 1),
    "paper/vit_h14_fast": ("vit_h14_518_bf16", "unet_gradient", 400, 1),
    "clip_rn50_fast + clean_estimate": ("clip_rn50", "clean_estimate", 200, 1),
    "resnet50_fast + clean_estimate": ("resnet50", "clean_estimate", 200, 1),
    "vit_h14_fast + clean_estimate": ("vit_h14_518_bf16", "clean_estimate", 400, 1),
}


class Flops(TorchDispatchMode):
    """FLOPs of the aten ops run inside (torch's own formulas, ``torch.utils.flop_counter.flop_registry``). Unlike
    ``FlopCounterMode`` it adds no module hooks, which ``torch.autograd.grad`` does not support."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out

    def get_total_flops(self) -> int:
        return self.total


def count(module: FeatureInversion, batch: int = 1) -> dict:
    """FLOPs of one guided iteration and of scoring one candidate, on fake tensors."""
    scheduler = fork(module.backbone.scheduler)
    scheduler.set_timesteps(1000)
    i = 500
    t, abar = scheduler.timesteps[i], alpha_bar(scheduler, i)
    with FakeTensorMode(allow_non_fake_inputs=True):
        sample = torch.randn(batch, *module.backbone.sample_shape)
        image = module.to_image(torch.zeros(1, *module.backbone.sample_shape)).detach()
        with torch.no_grad():
            dim = module.extractor(image).shape[1]
        target = torch.randn(batch, dim)
        with Flops() as iteration:
            try:
                module.guided_output(scheduler, sample, t, abar.to(sample), target, 1.0)
            except DataDependentOutputException:  # Guidance.shape reads values after the backward: the rest is tiny
                pass
        with Flops() as candidate, torch.no_grad():
            module.extractor.measure(module.to_image(sample))
    return {"iteration": iteration.get_total_flops(), "candidate": candidate.get_total_flops()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke test)")
    parser.add_argument("--out", default=str(ROOT / "runs"))
    args = parser.parse_args(argv)
    scale = "tiny" if args.tiny else "full"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="flops_sd_")
    try:
        start = time.perf_counter()
        folder = build_sd_folder(Path(tmp) / "sd", scale)
        scheduler_cls, scheduler_config = PRIOR_SCHEDULER
        prior = StableDiffusionPrior(str(folder), scheduler=scheduler_cls, scheduler_config=scheduler_config)
        print(f"[flops] SD ({scale}) built and loaded in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    for name in sorted({e for e, *_ in PRESETS.values()}):
        extractor = EXTRACTORS[scale][name][1]()
        for variant, cls in GUIDANCE.items():
            module = FeatureInversion(prior, extractor, guidance=cls(scale=1.0), num_inference_steps=1000,
                                      progress=False)
            counts[name, variant] = count(module)
            print(f"[flops] {name} {variant}: {counts[name, variant]}", flush=True)
        del extractor
    rows = ["| extractor | guidance | GFLOPs / guided iteration | GFLOPs / candidate scored |", "| --- | --- | --- | --- |"]
    for (name, variant), c in counts.items():
        rows.append(f"| {EXTRACTORS[scale][name][0]} | {variant} | {c['iteration'] / 1e9:,.4g} | "
                    f"{c['candidate'] / 1e9:,.4g} |")
    rows += ["", "| preset | guided iterations / image | TFLOPs / image | vs the authors' |", "| --- | --- | --- | --- |"]
    for preset, (name, variant, iterations, candidates) in PRESETS.items():
        c = counts[name, variant]
        flops = iterations * (c["iteration"] + candidates * c["candidate"])
        ref = counts[name.replace("_bf16", ""), "unet_gradient"]
        theirs = AUTHORS * (ref["iteration"] + 2 * ref["candidate"])
        rows.append(f"| {preset} | {iterations:,} | {flops / 1e12:,.4g} | 1/{theirs / flops:,.0f} |")
    text = (f"`python benchmarks/flops.py{' --tiny' if args.tiny else ''}`, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}; SD 1.5 ({scale}) at batch 1, torch.utils.flop_counter formulas on fake tensors.\n\n"
            + "\n".join(rows) + "\n")
    (out / f"flops{'-tiny' if args.tiny else ''}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
