"""Memory and FLOPs of a guided iteration of SDXL, SD 3.5 medium and FLUX.1-dev, and of noise optimisation through
SDXL-Turbo, SD 3.5 Large Turbo and FLUX.1-schnell, at scale, without a GPU (issue 20, item 6; issue 36).

    python benchmarks/scale.py    # 40-50 min, one CPU thread; writes benchmarks/results/scale.md

(7-10 min of it the guided presets' three priors, the rest the few-step ones', on a shared 2-core machine;
``--families`` picks some. Memory: a few GB, most of it the extractors' real random weights, SigLIP's 3.5 GB the
largest.)

Each modern preset's prior (configs/modern/*.yaml: SDXL base 1.0 with torchvision ResNet-50, SD 3.5 medium with DINOv2
ViT-B/14 at 518 px, FLUX.1-dev with open_clip ViT-L/14), built by ``benchmarks/gpu.py``'s ``modern_prior``: the prior
class's own constructor on a tiny folder (the real scheduler config, prompt embeddings of the real shapes), then the
full-size denoiser and VAE (the real architectures, configs in gpu.py) swapped in with FAKE parameters
(``FakeTensorMode``: shapes and dtypes, no memory, no compute), so the prior's own denoise/decode code runs. The
preset's extractor with random real weights, its preset preprocessing and precision. One case = one
``FeatureInversion.guided_output`` at the middle step of the preset's schedule under bf16 autocast (Lightning's
``bf16-mixed``) and ``torch.no_grad`` (predict), for resolution 512/1024 x batch 1/4 x gradient checkpointing (denoiser
and VAE) off/on x guidance (``UNetGradient``: through the denoiser; ``CleanEstimateGradient``: no denoiser backward)
x the denoiser's weights held in float32 (as the priors hold them today) or in bf16 (a what-if: autocast then makes no
bf16 copies of them; the VAE stays float32 as its ``force_upcast`` decodes in float32, the extractor as the preset).

Memory, as benchmarks/results/memory-estimate.md counted it (``git show 6f45ffb:benchmarks/memory.py``): resident =
parameters + buffers of the prior (denoiser, whole VAE, prompt embeddings) and the extractor; peak of created tensors =
the most bytes of storages created by the call alive at once (activations saved for the backward, autocast copies of
weights, gradients); estimated peak = the sum, what ``max_memory_allocated`` would show if the GPU made the same
tensors. Unlike that script's counter, an output sharing an input's storage (a weight's transpose, any view, an
in-place result) is no created tensor: it counted the transposes of weights it had not seen made (float32 runs, where
autocast makes no copies). Not counted: CUDA context, cuDNN/cuBLAS workspaces, allocator rounding and fragmentation.
``--vae-bf16``: the priors' ``vae_upcast: false`` (the VAE decodes in bf16), to scale-vae-bf16.md. CPU autocast
differs from CUDA's: CUDA runs ``group_norm`` and ``layer_norm`` in float32 (its autocast float32 list), CPU leaves them
in bf16; that policy is emulated here for these two (the bulk of the activations it concerns; ``--cpu-norms`` turns the
emulation off). Attention is PyTorch's fused SDPA on the CPU as on the GPU (no tokens x tokens matrix is kept). A card
fits as memory-estimate.md's rule: estimated peak x 1.15 (allocator slack) + 0.5 GiB (context) <= N x 10^9 bytes
(24 GB: 22.35 GiB, 48 GB: 44.7, 80 GB: 74.5, 141 GB: 131.3; a little under what each card offers), "tight" = only
without the slack.

FLOPs: ``torch.utils.flop_counter``'s formulas (matmuls, convolutions, attention; the CPU's fused attention, which its
registry lacks, with its SDPA formulas) over the same call: the forward, the backward and, with checkpointing, the
recomputed forward; counted in every case (one pass gives both). ``tests/benchmarks/test_scale_script.py`` runs it on
tiny stand-ins (``--tiny``, ``main(argv, extractors=...)``).

The few-step presets (configs/modern/sdxl_turbo_clip.yaml, sd35_large_turbo_siglip.yaml, flux_schnell_dinov2.yaml:
``model.sampler: lit_featinv.NoiseOptimization``) run no guided iteration: each Adam step is a pass through the whole
few-step sampler (``NoiseOptimization.sample_from``, the prior's own scheduler and denoise), the decode, the extractor
and the backward to the initial noise; an image costs ``optimization_steps`` such steps and a last, forward-only pass,
each pass's image scored as the best-image candidate. One case = those two passes on fake tensors
(:func:`estimate_noise`): the peak of the larger, the FLOPs of each, and per image (Adam steps x step + last) / batch.
Checkpointing there: on (the presets': the prior's gradient checkpointing and the sampler's ``torch.utils.checkpoint``
around each denoiser call), ``prior`` (the prior's only), off. Each preset's FLOPs per image are set against the
authors' (12,960 guided iterations of SD 1.4, the paper presets' rows of benchmarks/results/flops.md; the least of
them) and issue 36's goal of 1/500 of it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import weakref
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu import (ALL_VARIANTS, KL_VAE, MODERN, NOISE_VARIANTS, ROOT, VARIANTS, family_variants, hold,  # noqa: E402
                 millions, modern_extractor, modern_models, modern_module, modern_prior, modern_settings, noise_variant,
                 resident_bytes, save_modern_folder, scratch_dir, set_checkpointing)

from lit_featinv import FeatureInversion  # noqa: E402
from lit_featinv.method import alpha_bar, fork, generators, score  # noqa: E402

GiB = 2**30
CONTEXT_GIB, SLACK = 0.5, 1.15  # a CUDA context, and the caching allocator's reserved / allocated (memory-estimate.md)
CARDS = (24, 48, 80, 141)  # GB: RTX 4090 / A10 / L4, L40S / A6000, A100 / H100, H200
HELD = {"fp32": torch.float32, "bf16": torch.bfloat16}
CHECKPOINTING = ("off", "on", "prior")
CKPT_CELL = {"prior": "prior only"}
aten = torch.ops.aten
CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: "forward",
                 aten._scaled_dot_product_flash_attention_for_cpu_backward: "backward"}


class Meter(TorchDispatchMode):
    """FLOPs (torch's formulas, plus the CPU's fused attention) and the peak of live bytes of the storages that ops
    create inside it (fake tensors count too; an output sharing an input's storage, a view or an in-place result, is
    no new storage)."""

    def __init__(self):
        super().__init__()
        self.flops, self.live, self.now, self.peak = 0, {}, 0, 0

    def _release(self, key: int) -> None:
        self.now -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in CPU_ATTENTION:
            q, k, v = (args[n].shape for n in ((0, 1, 2) if CPU_ATTENTION[packet] == "forward" else (1, 2, 3)))
            self.flops += (sdpa_flop_count(q, k, v) if CPU_ATTENTION[packet] == "forward" else
                           sdpa_backward_flop_count(args[0].shape, q, k, v))
        elif (formula := flop_registry.get(packet)) is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        given = {id(t.untyped_storage()) for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()  # one Python object per storage while it lives
                if id(storage) not in self.live and id(storage) not in given:  # not a view (or in-place) of an input:
                    # the weights' transposes are no new memory (6f45ffb's memory.py counted those of weights it had
                    # not seen created)
                    self.live[id(storage)] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._release, id(storage))
        return out


@contextmanager
def cuda_norms():
    """``group_norm`` and ``layer_norm`` under CPU autocast as CUDA autocast runs them: inputs cast to float32, float32
    out (CPU autocast has them in no list: bf16 in, bf16 out)."""
    F = torch.nn.functional
    saved = F.group_norm, F.layer_norm

    def fp32(fn):
        def run(input, *args, **kwargs):
            if not torch.is_autocast_enabled("cpu"):
                return fn(input, *args, **kwargs)
            up = lambda x: x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x  # noqa: E731
            with torch.autocast("cpu", enabled=False):
                return fn(up(input), *[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})
        return run

    F.group_norm, F.layer_norm = fp32(saved[0]), fp32(saved[1])
    try:
        yield
    finally:
        F.group_norm, F.layer_norm = saved


def fits(gib: float) -> str:
    """The smallest card the estimated peak fits (memory-estimate.md's rule); "tight": only without the slack."""
    for card in CARDS:
        if gib * SLACK + CONTEXT_GIB <= card * 1e9 / GiB:
            return f"{card} GB"
    for card in CARDS:
        if gib + CONTEXT_GIB <= card * 1e9 / GiB:
            return f"{card} GB, tight"
    return "none"


def estimate(module: FeatureInversion, batch: int, dim: int, fake: FakeTensorMode, norms: bool, w: float = 4.0,
             index: int | None = None) -> dict:
    """One ``guided_output`` on fake tensors at the middle step of the module's schedule (or step ``index``) with
    weight ``w`` (0: the loop's unguided iteration, a forward and a decode): created-tensor peak and FLOPs."""
    scheduler = fork(module.prior.scheduler)
    steps = module.num_inference_steps
    scheduler.set_timesteps(steps, **module.prior.schedule_kwargs(steps))
    i = len(scheduler.timesteps) // 2 if index is None else index
    t, abar = scheduler.timesteps[i], alpha_bar(scheduler, i)
    scale = getattr(scheduler, "scale_model_input", None)
    if scale is not None:  # Euler: its step index is looked up by value, here on real tensors; the call reuses it
        scale(torch.zeros(1), t)
    with fake:
        sample = torch.randn(batch, *module.prior.sample_shape) * getattr(scheduler, "init_noise_sigma", 1.0)
        target = torch.randn(batch, dim)
        with Meter() as meter, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), \
                (cuda_norms() if norms else nullcontext()):
            try:
                module.guided_output(scheduler, sample, t, abar, target, w)
            except DataDependentOutputException:  # Guidance.shape reads values after the backward: the rest is
                pass                              # latent-sized
    return {"created_gib": meter.peak / GiB, "gflops": meter.flops / 1e9}


def estimate_noise(module: FeatureInversion, batch: int, dim: int, fake: FakeTensorMode, norms: bool) -> dict:
    """Noise optimisation (``module.sampler``, a ``NoiseOptimization``) on fake tensors, as its ``generate`` runs a
    pass: an Adam step's pass (the whole few-step sampler from the scaled noise, ``sampler.sample_from`` with its
    checkpointing, the decode, the extractor, loss + noise-norm penalty, the backward to the noise) and the last,
    forward-only pass, each followed by the scoring of its image as the best-image candidate (``track_best``'s
    ``score``). Not run: the Adam update and the best-image bookkeeping (latent-sized, no matmuls). Created-tensor
    peak (the larger of the two passes) and the FLOPs of each."""
    sampler = module.sampler
    prepared = []
    for _ in range(2):  # the schedulers the two passes take, made on real tensors: a step index looked up by value
        scheduler = module.fresh_scheduler()  # would be data-dependent on fake ones; begin at the first step
        scheduler.set_begin_index(0)
        prepared.append(scheduler)
    scale = float(getattr(prepared[0], "init_noise_sigma", 1.0))
    gens = generators(list(range(batch)))
    module.fresh_scheduler = lambda: prepared.pop(0)  # an instance attribute over the method, removed below
    out = {}
    try:
        with fake:
            target = torch.randn(batch, dim)
            for name, backward in (("step", True), ("last", False)):
                with Meter() as meter, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), \
                        (cuda_norms() if norms else nullcontext()):
                    noise = torch.randn(batch, *module.prior.sample_shape).requires_grad_(backward)
                    with torch.set_grad_enabled(backward):
                        sample = sampler.sample_from(module, noise * scale, gens)
                        seen, image = sampler.images(module, sample)
                        if backward:
                            n = noise[0].numel()
                            penalty = sampler.norm_weight * (noise.flatten(1).norm(dim=1) - n ** 0.5) ** 2 / n
                            (module.loss(module.extractor(seen), target) + penalty).sum().backward()
                    score(module.extractor, module.loss, image.detach(), target)
                    del noise, sample, image, seen
                out[name] = meter
    finally:
        del module.fresh_scheduler
    return {"created_gib": max(m.peak for m in out.values()) / GiB, "gflops_step": out["step"].flops / 1e9,
            "gflops_last": out["last"].flops / 1e9}


FLOPS_MD = ROOT / "benchmarks" / "results" / "flops.md"
A100_BF16_TFLOPS = 312  # NVIDIA A100's dense bf16 tensor-core peak (its datasheet; 624 with 2:4 sparsity)


def paper_tflops(path: Path = FLOPS_MD) -> list[tuple[str, str, int, float, str]]:
    """The paper presets' rows of benchmarks/flops.py's table (flops.md): (preset, guidance, guided iterations per
    image, TFLOPs per image, its fraction of the authors' with the same extractor), SD 1.5 at 512 px."""
    rows = re.findall(r"^\| (paper/\w+) \| ([\w+]+) \| ([0-9,]+) \| \d+ \| ([0-9.e+,]+) \| (1/[0-9.,]+) \|$",
                      path.read_text(), re.M)
    return [(p, g, int(n.replace(",", "")), float(v.replace(",", "")), f) for p, g, n, v, f in rows]


def authors_tflops(path: Path = FLOPS_MD) -> dict[str, float]:
    """TFLOPs per image of the paper presets at the authors' configuration (12,960 guided iterations of SD 1.4/1.5
    with the UNet gradient and two candidates; benchmarks/flops.py's table in flops.md), by preset."""
    rows = {p: v for p, g, n, v, _ in paper_tflops(path) if n == 12_960 and g == "unet_gradient"}
    if not rows:
        raise RuntimeError(f"{path}: no rows of the paper presets at 12,960 guided iterations")
    return rows


def comparison(summary: list[dict], theirs: float, reference: str) -> list[str]:
    """The few-step presets' FLOPs per image against the authors', issue 36's goal (1/500), the paper presets and
    ReNO's published cost (a time: only bounded in FLOPs)."""
    budget = theirs / 500
    lines = ["", "## The few-step presets against the authors', the paper presets and ReNO", "",
             f"Issue 36's goal is <= 1/500 of the authors' FLOPs per image: <= {budget:,.0f} TFLOPs (the authors' "
             f"{theirs:,.4g} TFLOPs: {reference}, their cheapest, at 12,960 guided iterations of SD 1.4; the SD 1.5 "
             "architecture counted in benchmarks/results/flops.md).", ""]
    for r in summary:
        fit = max(0, int((budget - r["last"]) // r["step"])) if r["step"] else 0
        lines.append(
            f"- {r['preset']} ({r['name']}, {r['px']} px, {r['opt']} Adam steps x {r['steps']} sampler "
            f"step{'s' if r['steps'] > 1 else ''}): {r['tflops']:,.0f} TFLOPs per image ({r['step']:,.1f} per Adam "
            f"step, {r['last']:,.1f} for the last pass, per generation), {versus(r['tflops'], theirs)} of the authors': "
            + ("meets the goal." if r["tflops"] * 500 <= theirs else
               f"misses the goal by {r['tflops'] / budget:,.1f}x; the budget holds {fit} Adam "
               f"step{'s' if fit != 1 else ''} of it."))
    paper = paper_tflops()
    authors = [v for p, g, n, v, _ in paper if n == 12_960]
    fast = [(p, g, v, f) for p, g, n, v, f in paper if n != 12_960]
    if fast:
        low, high = min(fast, key=lambda x: x[2]), max(fast, key=lambda x: x[2])
        lines.append(f"- The paper presets (flops.md, SD 1.5 at 512 px): the authors' configuration {min(authors):,.4g} "
                     f"to {max(authors):,.4g} TFLOPs per image by extractor; the fast presets {low[2]:,.0f} ({low[0]}, "
                     f"{low[1]}: {low[3]} of the authors' with its extractor) to {high[2]:,.0f} ({high[0]}, {high[1]}: "
                     f"{high[3]}).")
    one_step = [r for r in summary if r["steps"] == 1]
    lines.append(
        "- ReNO (Eyring et al., NeurIPS 2024) reports 20-50 s per image on one A100 for one-step models (SD-Turbo, "
        "SDXL-Turbo and others) with 50 iterations on a sum of four reward models: a time, not FLOPs. The only "
        f"honest conversion is a bound: at the A100's dense bf16 peak ({A100_BF16_TFLOPS} TFLOPS) 20-50 s are at "
        f"most {20 * A100_BF16_TFLOPS:,}-{50 * A100_BF16_TFLOPS:,} TFLOP per image, whatever ReNO computed in them"
        + ("".join(f"; {r['preset']}'s {r['tflops']:,.0f} TFLOPs per image would take at least "
                   f"{r['tflops'] / A100_BF16_TFLOPS:.1f} s at that peak" for r in one_step))
        + ". How far below the peak either runs is not known until benchmarks/gpu.py --modern measures it.")
    return lines


def versus(tflops: float, theirs: float) -> str:
    """The authors' FLOPs per image over these, as a fraction (1/N)."""
    return f"1/{theirs / tflops:,.0f}" if tflops * 10 < theirs else f"1/{theirs / tflops:.1f}"


def cell(row: dict, key: str, fmt: str = "{:.2f}") -> str:
    return fmt.format(row[key]) if key in row else "-"


def render(header: list[str], rows: list[dict], presets: dict) -> str:
    """The tables: guided cases, noise-optimisation cases, each kind's presets (``presets``: their lines, the
    noise-optimisation presets' ``summary`` and the authors' figure ``theirs``) and the comparison."""
    guided = [r for r in rows if r["variant"] not in NOISE_VARIANTS]
    noise = [r for r in rows if r["variant"] in NOISE_VARIANTS]
    lines = list(header)
    if guided or not noise:
        lines += ["", "| prior | px | batch | grad ckpt | guidance | resident GiB (fp32 / bf16 held) | peak of created "
                      "tensors GiB (fp32 / bf16 held) | estimated peak GiB (fp32 / bf16 held) | fits (fp32 held) | "
                      "fits (bf16 held) | GFLOPs / guided iteration |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in guided:
        lines.append(
            f"| {r['prior']} | {r['resolution']} | {r['batch']} | {r['ckpt']} | {r['variant']} | "
            f"{cell(r, 'resident_fp32')} / {cell(r, 'resident_bf16')} | {cell(r, 'created_fp32')} / "
            f"{cell(r, 'created_bf16')} | {cell(r, 'peak_fp32')} / {cell(r, 'peak_bf16')} | {r.get('fits_fp32', '-')} | "
            f"{r.get('fits_bf16', '-')} | {cell(r, 'gflops', '{:,.0f}')} |" + (f" {r['error']} |" if "error" in r else ""))
    if noise:
        lines += ["", "Noise optimisation (the few-step presets, model.sampler: NoiseOptimization): per case one Adam "
                      "step's pass (the whole sampler from the noise, the decode, the extractor, the backward to the "
                      "noise) and the last, forward-only pass, each with the scoring of its image; peak = the larger "
                      "pass's; TFLOPs / image = (Adam steps x the step's GFLOPs + the last pass's) / batch. Grad ckpt: "
                      "on = the prior's gradient checkpointing (denoiser blocks and VAE) and the sampler's around "
                      "each denoiser call (`sampler.checkpointing: true`, as the presets: nested, so the backward "
                      "recomputes each denoiser call twice); prior only = the prior's, the sampler's off; off = "
                      "neither. Tiny decoder: the gradient through AutoencoderTiny (TAESDXL, TAESD3, TAEF1's "
                      "architecture; `sampler.decoder`), the VAE still decoding each pass's image to score (no "
                      "gradient), at the preset's resolution only.", "",
                  "| prior | px | batch | grad ckpt | sampler | resident GiB (fp32 / bf16 held) | peak of created "
                  "tensors GiB (fp32 / bf16 held) | estimated peak GiB (fp32 / bf16 held) | fits (fp32 held) | fits "
                  "(bf16 held) | GFLOPs / Adam step | GFLOPs / last pass | TFLOPs / image |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in noise:
            lines.append(
                f"| {r['prior']} | {r['resolution']} | {r['batch']} | {CKPT_CELL.get(r['ckpt'], r['ckpt'])} | "
                f"{r['optimization_steps']} Adam "
                f"steps x {r['steps']} step{'s' if r['steps'] > 1 else ''}"
                f"{', tiny decoder' if r['variant'].endswith('+tiny_decoder') else ''} | "
                f"{cell(r, 'resident_fp32')} / {cell(r, 'resident_bf16')} | {cell(r, 'created_fp32')} / "
                f"{cell(r, 'created_bf16')} | {cell(r, 'peak_fp32')} / {cell(r, 'peak_bf16')} | "
                f"{r.get('fits_fp32', '-')} | {r.get('fits_bf16', '-')} | {cell(r, 'gflops_step', '{:,.0f}')} | "
                f"{cell(r, 'gflops_last', '{:,.0f}')} | {cell(r, 'tflops_image', '{:,.1f}')} |"
                + (f" {r['error']} |" if "error" in r else ""))
    if presets["guided"]:
        lines += ["", "Each guided preset's own setting (its resolution, samples per target x batch size, "
                      "checkpointing, guidance); guided iterations / image as the loop runs them: K at each step, one "
                      "unguided iteration (a forward and a decode, no backward) where flow matching starts from pure "
                      "noise (sigma = 1); vs the authors' = these FLOPs per image / the authors' (above):", "",
                  "| preset | px | batch | grad ckpt | guidance | estimated peak GiB (fp32 / bf16 held) | fits (fp32 "
                  "held) | fits (bf16 held) | guided iterations / image | TFLOPs / image | vs the authors' |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"] + presets["guided"]
    if presets["noise"]:
        lines += ["", "Each noise-optimisation preset at its resolution and checkpointing, its denoiser's weights held "
                      "as the preset holds them: estimated peak at batch 1 and 4 (fits), its FLOPs per image at its "
                      "own batch (samples per target x batch size), and against the authors' (the goal of issue 36: "
                      "<= 1/500):", "",
                  "| preset | px | grad ckpt | weights held | estimated peak GiB, batch 1 (fits) | estimated peak GiB, "
                  "batch 4 (fits) | preset's batch | Adam steps x sampler steps (denoiser forwards, backwards / image) "
                  "| TFLOPs / image | vs the authors' | <= 1/500 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"] + presets["noise"]
        lines += comparison(presets["summary"], *presets["theirs"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, extractors: dict | None = None) -> int:
    """``extractors``: {family: (description, builder)} instead of each preset's own (the test's tiny ones)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(MODERN), help="comma list of " + ",".join(MODERN))
    parser.add_argument("--resolutions", default="512,1024")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--checkpointing", default="off,on,prior",
                        help="off; on: gradient checkpointing of denoiser + VAE (and noise optimisation's around each "
                             "denoiser call, as its presets); prior: the former only (noise optimisation's cases)")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS), help="each family runs those its preset can: "
                                                                           "guidance, or noise_optimization")
    parser.add_argument("--held", default="fp32,bf16", help="the denoiser's weights held in: fp32 (today), bf16")
    parser.add_argument("--cpu-norms", action="store_true",
                        help="leave group_norm/layer_norm to CPU autocast (bf16) instead of CUDA's float32 policy")
    parser.add_argument("--vae-bf16", action="store_true", help="the priors' vae_upcast: false (the VAE decodes in "
                                                                "bf16 under autocast; default: its force_upcast, "
                                                                "float32); writes scale-vae-bf16.md")
    parser.add_argument("--tiny", action="store_true", help="tiny stand-ins for the full-size models (a test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (fake tensors: no compute)")
    parser.add_argument("--out", default=None, help="folder for scale.md / scale.jsonl (default: benchmarks/results; "
                                                    "with --tiny runs/)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    torch.set_num_threads(args.threads)
    families, variants = args.families.split(","), args.variants.split(",")
    resolutions, batches = [int(r) for r in args.resolutions.split(",")], [int(b) for b in args.batches.split(",")]
    ckpts, held = args.checkpointing.split(","), args.held.split(",")
    if set(families) - set(MODERN) or set(variants) - set(ALL_VARIANTS) or set(held) - set(HELD) or \
            set(ckpts) - set(CHECKPOINTING):
        parser.error(f"--families from {','.join(MODERN)}; --variants from {','.join(ALL_VARIANTS)}; --held from "
                     f"fp32,bf16; --checkpointing from {','.join(CHECKPOINTING)}")
    out = Path(args.out or (ROOT / "runs" if args.tiny else ROOT / "benchmarks" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    stem = "scale-vae-bf16" if args.vae_bf16 else "scale"
    md_path, jsonl_path = out / f"{stem}.md", out / f"{stem}.jsonl"
    scale = "tiny" if args.tiny else "full"
    fake = FakeTensorMode(allow_non_fake_inputs=True)  # one mode: the models' parameters and the call's tensors

    import diffusers
    command = " ".join(sys.argv[1:] if argv is None else argv)
    header = ["# ESTIMATED memory and FLOPs of a guided iteration or a noise-optimisation step at scale ("
              + ("TINY stand-ins: a test of the script, not an estimate" if args.tiny else
                 ", ".join(MODERN[f]["name"] for f in families) + "; the real architectures with fake weights")
              + ")", "",
              f"- command: `python benchmarks/scale.py{' ' + command if command else ''}`",
              f"- no GPU (CPU {platform.machine()}; FakeTensorMode: shapes and dtypes only); torch {torch.__version__}, "
              f"diffusers {diffusers.__version__}, python {platform.python_version()}, {time.strftime('%Y-%m-%d')}",
              "- per case: one `FeatureInversion.guided_output` (the prior's own denoise and decode, the preset's "
              "extractor, the guidance's backward) at the middle step of the preset's schedule, w = 4; for the "
              "noise-optimisation presets one Adam step's pass and the last pass of `NoiseOptimization` (the whole "
              "few-step sampler through `sample_from`, the decode, the extractor, the backward to the noise; each "
              "image scored); bf16 autocast; "
              + ("CUDA autocast's float32 policy emulated for group_norm/layer_norm" if not args.cpu_norms
                 else "CPU autocast rules (group_norm/layer_norm in bf16)")
              + ("; VAE decoding in bf16 (vae_upcast: false)" if args.vae_bf16 else
                 "; VAE decoding in float32 (vae_upcast: null, the VAEs' force_upcast: true; as the presets)"),
              "- resident = parameters + buffers of the prior (denoiser, whole VAE, prompt embeddings) and the "
              "extractor; fp32 held = as the priors hold weights today, bf16 held = the denoiser's weights in bf16 "
              "(the VAE, float32 for its force_upcast decode, and the extractor as the preset); peak of created "
              "tensors = the most bytes of storages created by the call alive at once (views and in-place results of "
              "existing tensors are none); estimated peak = the sum. Not "
              "counted: CUDA context, cuDNN/cuBLAS workspaces, allocator rounding and fragmentation",
              f"- fits: the smallest card (GB = 1e9 bytes) with estimated peak x {SLACK} + {CONTEXT_GIB} GiB <= its "
              "size; tight = only without the slack (as benchmarks/results/memory-estimate.md)",
              "- GFLOPs: torch.utils.flop_counter formulas (matmuls, convolutions, attention incl. the CPU's fused "
              "attention) over the whole call: forward, backward, and with checkpointing the recomputed forward(s)"]
    theirs_by_preset = authors_tflops()
    reference = min(theirs_by_preset, key=theirs_by_preset.get)  # the cheapest of the authors' runs: no flattery
    theirs = theirs_by_preset[reference]
    header.append(f"- the authors' FLOPs per image: {theirs:,.4g} TFLOPs, {reference} at their 12,960 guided "
                  "iterations of SD 1.4/1.5 (the least of the paper presets' in benchmarks/results/flops.md: "
                  + ", ".join(f"{p} {v:,.4g}" for p, v in theirs_by_preset.items()) + ")")
    tmp = tempfile.mkdtemp(prefix="scale_", dir=scratch_dir(10**8))
    rows, presets = [], {"guided": [], "noise": [], "summary": [], "theirs": (theirs, reference)}
    try:
        for family in families:
            spec, settings = MODERN[family], modern_settings(family)
            start = time.perf_counter()
            folder = save_modern_folder(family, Path(tmp) / family)
            with fake:
                denoiser, vae = modern_models(family, scale, "cpu")
            denoisers = {"fp32": denoiser}
            if "bf16" in held:
                with fake:
                    denoisers["bf16"] = hold(modern_models(family, scale, "cpu")[0], torch.bfloat16)
            description, build = extractors[family] if extractors else (
                f"{settings['extractor']} (the preset's class, preprocessing and precision; random weights)",
                partial(modern_extractor, family))
            extractor = build()
            with torch.no_grad():  # the feature size, on a real image
                dim = extractor.measure(torch.rand(1, 3, 64, 64)).shape[1]
            config = spec["config"] if scale == "full" else "tiny stand-in"
            header.append(f"- {spec['name']} ({spec['preset']}): {spec['denoiser']} {millions(denoiser):,.1f}M "
                          f"parameters, config {config}; AutoencoderKL {millions(vae):.1f}M, "
                          f"{dict(KL_VAE, **spec['vae']) if scale == 'full' else 'tiny stand-in'}; scheduler "
                          f"{spec['scheduler']['_class_name']} ({settings['steps']} step"
                          + ("s, the middle one" if settings["sampler"] is None else
                             f"{'s' if settings['steps'] > 1 else ''}, all of them, x "
                             f"{settings['sampler_args']['optimization_steps']} Adam steps + 1")
                          + f"); prompt "
                          f"embeddings {spec['embeds']}; extractor {description}, {millions(extractor.network):.1f}M "
                          f"parameters, input {extractor.preprocess.size} {extractor.preprocess.interpolation}, "
                          f"autocast {extractor.autocast}, feature {dim}; the preset holds the denoiser's weights in "
                          f"{settings['held']}")
            print(f"[scale] {family}: built in {time.perf_counter() - start:.1f} s", flush=True)
            for resolution in resolutions:
                priors = {dtype: modern_prior(family, folder, resolution, denoisers[dtype], vae) for dtype in held}
                for prior in priors.values():
                    prior.vae_upcast = False if args.vae_bf16 else None  # as the constructor's vae_upcast sets it
                for variant in family_variants(family, variants):
                    noisy = variant in NOISE_VARIANTS
                    if variant.endswith("+tiny_decoder") and noisy and resolution != settings["resolution"]:
                        continue  # the tiny decoder at the preset's resolution only
                    for ckpt in ckpts:
                        if ckpt == "prior" and not noisy:  # the guided loop has no checkpointing of its own
                            continue
                        for batch in batches:
                            row = {"family": family, "prior": spec["name"], "resolution": resolution, "batch": batch,
                                   "ckpt": ckpt, "variant": variant}
                            if noisy:
                                row |= {"steps": settings["steps"],
                                        "optimization_steps": settings["sampler_args"]["optimization_steps"]}
                            for dtype, prior in priors.items():
                                set_checkpointing(prior, ckpt != "off")
                                module = modern_module(family, prior, extractor, variant, ckpt == "on")
                                start = time.perf_counter()
                                try:
                                    got = (estimate_noise if noisy else estimate)(module, batch, dim, fake,
                                                                                  not args.cpu_norms)
                                except RuntimeError as err:
                                    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
                                    continue
                                resident = resident_bytes(module) / GiB
                                row |= {f"resident_{dtype}": resident, f"created_{dtype}": got["created_gib"],
                                        f"peak_{dtype}": resident + got["created_gib"],
                                        f"fits_{dtype}": fits(resident + got["created_gib"]),
                                        f"seconds_{dtype}": round(time.perf_counter() - start, 1)}
                                for key in ("gflops", "gflops_step", "gflops_last"):
                                    if key in got:
                                        row.setdefault(key, got[key])
                                if not noisy and "guided_iterations" not in row and \
                                        preset_case(settings, row, ckpt, variant):
                                    guided, plain = preset_iterations(module, spec["preset"])
                                    row |= {"guided_iterations": guided, "unguided_iterations": plain}
                                    if plain:  # the first step at pure noise: a forward and a decode, no backward
                                        row["gflops_unguided"] = estimate(module, batch, dim, fake, not args.cpu_norms,
                                                                          w=0.0, index=0)["gflops"]
                            if noisy and "gflops_step" in row:  # the whole optimisation, per generation
                                row["tflops_image"] = (row["optimization_steps"] * row["gflops_step"]
                                                       + row["gflops_last"]) / batch / 1e3
                            rows.append(row)
                            print("[scale] " + json.dumps(row), flush=True)
                            md_path.write_text(render(header, rows, presets))
            if settings["sampler"] is None:
                mine = next((r for r in rows if r["family"] == family and "guided_iterations" in r), None)
                if mine is not None:
                    guided, plain = mine["guided_iterations"], mine["unguided_iterations"]
                    tflops = (guided * mine.get("gflops", 0) + plain * mine.get("gflops_unguided", 0)) \
                        / mine["batch"] / 1e3
                    presets["guided"].append(
                        f"| {spec['preset']} | {mine['resolution']} | {mine['batch']} | {mine['ckpt']} | "
                        f"{mine['variant']} | {cell(mine, 'peak_fp32')} / {cell(mine, 'peak_bf16')} | "
                        f"{mine.get('fits_fp32', '-')} | {mine.get('fits_bf16', '-')} | {guided}"
                        + (f" + {plain} unguided" if plain else "") + f" | {tflops:,.1f} | {versus(tflops, theirs)} |")
            else:
                line, summary = noise_preset_line(family, settings, [r for r in rows if r["family"] == family], theirs)
                if line:
                    presets["noise"].append(line)
                    presets["summary"].append(summary)
            del denoiser, denoisers, vae, extractor
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(header, rows, presets)
    md_path.write_text(text)
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(text)
    print(f"[scale] wrote {md_path} and {jsonl_path} in {time.perf_counter() - began:.0f} s", flush=True)
    return 0


def noise_preset_line(family: str, settings: dict, rows: list[dict], theirs: float) -> str | None:
    """The noise-optimisation preset's row of the presets' table: its resolution and checkpointing, the estimated
    peak at batch 1 and 4 with the denoiser held as the preset holds it, its FLOPs per image at its own batch, the
    ratio to the authors'."""
    spec, held = MODERN[family], settings["held"]
    ckpt = preset_checkpointing(settings)
    mine = {r["batch"]: r for r in rows if r["resolution"] == settings["resolution"] and r["ckpt"] == ckpt
            and r["variant"] == noise_variant(family)}
    own = mine.get(settings["batch"])
    if own is None or "tflops_image" not in own:
        return None, None
    peaks = " | ".join(f"{cell(mine[b], f'peak_{held}')} ({mine[b].get(f'fits_{held}', '-')})" if b in mine else "- (-)"
                       for b in (1, 4))
    opt, steps = settings["sampler_args"]["optimization_steps"], settings["steps"]
    line = (f"| {spec['preset']} | {settings['resolution']} | {CKPT_CELL.get(ckpt, ckpt)} | {held} | {peaks} | "
            f"{settings['batch']} | "
            f"{opt} x {steps} ({(opt + 1) * steps} forwards, {opt * steps} backwards"
            f"{'; the gradient through the tiny decoder' if own['variant'].endswith('+tiny_decoder') else ''}) | "
            f"{own['tflops_image']:,.1f} | "
            f"{versus(own['tflops_image'], theirs)} | {'yes' if own['tflops_image'] * 500 <= theirs else 'no'} |")
    return line, {"preset": spec["preset"], "name": spec["name"], "px": settings["resolution"], "opt": opt,
                  "steps": steps, "tflops": own["tflops_image"], "step": own["gflops_step"] / own["batch"] / 1e3,
                  "last": own["gflops_last"] / own["batch"] / 1e3}


def preset_checkpointing(settings: dict) -> str:
    """The checkpointing case of a preset: off, on (the prior's and, with noise optimisation, the sampler's), prior
    (only the prior's)."""
    sampler = settings["sampler"] is not None and settings["sampler_args"].get("checkpointing", True)
    return ("on" if sampler or settings["sampler"] is None else "prior") if settings["checkpointing"] else \
        ("on" if sampler else "off")


def preset_case(settings: dict, row: dict, ckpt: str, variant: str) -> bool:
    """Whether a guided case is its preset's own setting (resolution, batch, checkpointing, guidance class)."""
    return (row["resolution"] == settings["resolution"] and row["batch"] == settings["batch"]
            and ckpt == ("on" if settings["checkpointing"] else "off") and variant in VARIANTS
            and type(VARIANTS[variant](None)).__name__ == settings["guidance"])


def preset_iterations(module: FeatureInversion, preset: str) -> tuple[int, int]:
    """Guided iterations and unguided ones per image as the loop runs the preset: K (its recurrence) at each step, one
    unguided iteration (no x0 to guide) where the signal level is 0 (flow matching's first step, sigma = 1)."""
    recurrence, scheduler = preset_recurrence(preset), module.fresh_scheduler()
    abars = [float(alpha_bar(scheduler, i)) for i in range(len(scheduler.timesteps))]
    return sum(recurrence for a in abars if a > 0), sum(1 for a in abars if a <= 0)


def preset_recurrence(preset: str) -> int:
    """Guided iterations per step of ``configs/<preset>.yaml`` (K; no early steps in the modern presets)."""
    import yaml
    model = yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text())["model"]["init_args"]
    return model.get("recurrence", 1)


if __name__ == "__main__":
    raise SystemExit(main())
