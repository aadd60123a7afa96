"""FLOPs of a guided iteration at full scale, counted without a GPU (issue 9, item 4).

    python benchmarks/flops.py                 # about 5 minutes and 12 GB of memory on 2 CPU cores; writes runs/flops.md

One guided iteration (``FeatureInversion.guided_output``: UNet, decoder, network, the backward of the guidance; with a
tiny decoder in the gradient, also the VAE's forward of the image that is scored) of Stable Diffusion 1.5 at 512x512
(the random-weight SD-1.5-shaped folder of ``benchmarks/gpu.py``, TAESD's architecture as the tiny decoder) with each
paper extractor (open_clip RN50, torchvision ResNet-50, ViT-H/14 at 518 px, their presets' preprocessing), batch 1,
for each guidance variant of ``gpu.py``; and the scoring of best-image candidates: the first (the estimate the
iteration decoded) costs a network forward, each further one (the authors' second, from the guided noise) a VAE
decode and a network forward. Counted with ``torch.utils.flop_counter``'s formulas on fake tensors
(``FakeTensorMode``: shapes only, no compute; matmuls, convolutions and attention, which is nearly all of it). FLOPs
per image of a preset = its guided iterations x (one iteration + its candidates' scoring); the authors' configuration
is 12,960 iterations (1000 DDPM steps, K = 8, K = 1000 for the first 5) with the UNet gradient and two candidates.
``tests/test_flops_script.py`` runs it on tiny stand-ins (``main(argv, extractors=...)``).
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
from gpu import EXTRACTORS, PRIOR_SCHEDULER, VARIANTS, build_sd_folder, build_tiny_decoder, scratch_dir  # noqa: E402

from lit_featinv import FeatureInversion, StableDiffusionPrior  # noqa: E402
from lit_featinv.method import alpha_bar, fork  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AUTHORS = 12_960
# preset: (extractor, guided iterations per image, best-image candidates per iteration); the paper presets with the
# paper's UNet gradient, the fast ones with each variant
PAPER = {"paper/clip_rn50": ("clip_rn50", AUTHORS, 2), "paper/resnet50": ("resnet50", AUTHORS, 2),
         "paper/vit_h14": ("vit_h14_518", AUTHORS, 2)}
FAST = {"paper/clip_rn50_fast": ("clip_rn50", 200, 1), "paper/resnet50_fast": ("resnet50", 200, 1),
        "paper/vit_h14_fast": ("vit_h14_518_bf16", 400, 1)}


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
    """FLOPs of one guided iteration, of the network's forward on an image and of the VAE's decode, on fake tensors."""
    scheduler = fork(module.prior.scheduler)
    scheduler.set_timesteps(1000)
    i = 500
    t, abar = scheduler.timesteps[i], alpha_bar(scheduler, i)
    with FakeTensorMode(allow_non_fake_inputs=True):
        sample = torch.randn(batch, *module.prior.sample_shape)
        image = module.to_image(torch.zeros(1, *module.prior.sample_shape)).detach()
        with torch.no_grad():
            dim = module.extractor(image).shape[1]
        target = torch.randn(batch, dim)
        with Flops() as iteration:
            try:
                module.guided_output(scheduler, sample, t, abar.to(sample), target, 1.0)
            except DataDependentOutputException:  # Guidance.shape reads values after the backward: the rest is tiny
                pass
        with Flops() as decode, torch.no_grad():
            image = module.to_image(sample)
        with Flops() as network, torch.no_grad():
            module.extractor.measure(image)
    return {"iteration": iteration.get_total_flops(), "network": network.get_total_flops(),
            "decode": decode.get_total_flops()}


def per_image(c: dict, iterations: int, candidates: int) -> float:
    """FLOPs per image: each iteration, its first candidate's network forward, further candidates' decode + forward."""
    return iterations * (c["iteration"] + c["network"] + (candidates - 1) * (c["decode"] + c["network"]))


def main(argv: list[str] | None = None, extractors: dict | None = None) -> int:
    """``extractors``: {name: (description, builder)} instead of gpu.py's (the test's tiny ones)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "runs"))
    parser.add_argument("--sd", default=None, help="an SD folder to use (default: SD 1.5's shapes, built here)")
    parser.add_argument("--tiny-decoder", default=None, help="an AutoencoderTiny folder (default: TAESD's, built here)")
    args = parser.parse_args(argv)
    builders = extractors or EXTRACTORS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="flops_sd_", dir=scratch_dir(5 * 10**9))
    try:
        start = time.perf_counter()
        folder = args.sd or build_sd_folder(Path(tmp) / "sd")
        tiny = args.tiny_decoder or str(build_tiny_decoder(Path(tmp) / "taesd"))
        prior = StableDiffusionPrior(str(folder), scheduler=PRIOR_SCHEDULER[0], scheduler_config=PRIOR_SCHEDULER[1])
        guidance = {name: make(tiny) for name, make in VARIANTS.items()}
        print(f"[flops] SD built and loaded in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    for name in sorted({e for e, *_ in (*PAPER.values(), *FAST.values())}):
        extractor = builders[name][1]()
        for variant in VARIANTS:
            module = FeatureInversion(prior, extractor, guidance=guidance[variant], num_inference_steps=1000,
                                      progress=False)
            counts[name, variant] = count(module)
            print(f"[flops] {name} {variant}: {counts[name, variant]}", flush=True)
        del extractor
    rows = ["| extractor | guidance | GFLOPs / guided iteration | GFLOPs / network forward | GFLOPs / VAE decode |",
            "| --- | --- | --- | --- | --- |"]
    for (name, variant), c in counts.items():
        rows.append(f"| {builders[name][0]} | {variant} | {c['iteration'] / 1e9:,.4g} | {c['network'] / 1e9:,.4g} | "
                    f"{c['decode'] / 1e9:,.4g} |")
    rows += ["", "| preset | guidance | guided iterations / image | candidates / iteration | TFLOPs / image | "
                 "vs the authors' |", "| --- | --- | --- | --- | --- | --- |"]
    for preset, (name, iterations, candidates) in (PAPER | FAST).items():
        theirs = per_image(counts[name.replace("_bf16", ""), "unet_gradient"], AUTHORS, 2)
        for variant in VARIANTS if preset in FAST else ["unet_gradient"]:
            flops = per_image(counts[name, variant], iterations, candidates)
            rows.append(f"| {preset} | {variant} | {iterations:,} | {candidates} | {flops / 1e12:,.4g} | "
                        f"1/{theirs / flops:,.0f} |")
    text = (f"`python benchmarks/flops.py{' ' + ' '.join(argv) if argv else ''}`, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}; {'SD 1.5' if not args.sd else folder} at batch 1, torch.utils.flop_counter "
            f"formulas on fake tensors.\n\n" + "\n".join(rows) + "\n")
    (out / "flops.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
