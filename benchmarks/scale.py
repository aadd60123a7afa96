"""Memory and FLOPs of a guided iteration of SDXL, SD 3.5 medium and FLUX.1-dev at scale, without a GPU (issue 20,
item 6).

    python benchmarks/scale.py    # about 7 minutes, 3 GB of memory, one CPU thread; writes benchmarks/results/scale.md

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
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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
from gpu import (KL_VAE, MODERN, MODERN_VARIANTS, ROOT, VARIANTS, hold, millions, modern_extractor,  # noqa: E402
                 modern_models, modern_prior, modern_settings, resident_bytes, save_modern_folder, scratch_dir,
                 set_checkpointing)

from lit_featinv import FeatureInversion  # noqa: E402
from lit_featinv.method import alpha_bar, fork  # noqa: E402

GiB = 2**30
CONTEXT_GIB, SLACK = 0.5, 1.15  # a CUDA context, and the caching allocator's reserved / allocated (memory-estimate.md)
CARDS = (24, 48, 80, 141)  # GB: RTX 4090 / A10 / L4, L40S / A6000, A100 / H100, H200
HELD = {"fp32": torch.float32, "bf16": torch.bfloat16}
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


def estimate(module: FeatureInversion, batch: int, dim: int, fake: FakeTensorMode, norms: bool) -> dict:
    """One ``guided_output`` on fake tensors at the middle step of the module's schedule: created-tensor peak and
    FLOPs."""
    scheduler = fork(module.prior.scheduler)
    steps = module.num_inference_steps
    scheduler.set_timesteps(steps, **module.prior.schedule_kwargs(steps))
    i = len(scheduler.timesteps) // 2
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
                module.guided_output(scheduler, sample, t, abar, target, 4.0)
            except DataDependentOutputException:  # Guidance.shape reads values after the backward: the rest is
                pass                              # latent-sized
    return {"created_gib": meter.peak / GiB, "gflops": meter.flops / 1e9}


def cell(row: dict, key: str, fmt: str = "{:.2f}") -> str:
    return fmt.format(row[key]) if key in row else "-"


def render(header: list[str], rows: list[dict], presets: list[str]) -> str:
    lines = header + ["", "| prior | px | batch | grad ckpt | guidance | resident GiB (fp32 / bf16 held) | peak of "
                          "created tensors GiB (fp32 / bf16 held) | estimated peak GiB (fp32 / bf16 held) | fits "
                          "(fp32 held) | fits (bf16 held) | GFLOPs / guided iteration |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['prior']} | {r['resolution']} | {r['batch']} | {r['ckpt']} | {r['variant']} | "
            f"{cell(r, 'resident_fp32')} / {cell(r, 'resident_bf16')} | {cell(r, 'created_fp32')} / "
            f"{cell(r, 'created_bf16')} | {cell(r, 'peak_fp32')} / {cell(r, 'peak_bf16')} | {r.get('fits_fp32', '-')} | "
            f"{r.get('fits_bf16', '-')} | {cell(r, 'gflops', '{:,.0f}')} |" + (f" {r['error']} |" if "error" in r else ""))
    lines += ["", "Each preset's own setting (its resolution, samples per target x batch size, checkpointing, guidance):",
              "", "| preset | px | batch | grad ckpt | guidance | estimated peak GiB (fp32 / bf16 held) | fits (fp32 "
                  "held) | fits (bf16 held) | guided iterations / image | TFLOPs / image |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"] + presets
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, extractors: dict | None = None) -> int:
    """``extractors``: {family: (description, builder)} instead of each preset's own (the test's tiny ones)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(MODERN), help="comma list of " + ",".join(MODERN))
    parser.add_argument("--resolutions", default="512,1024")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--checkpointing", default="off,on", help="gradient checkpointing of denoiser + VAE")
    parser.add_argument("--variants", default=",".join(MODERN_VARIANTS))
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
    ckpts = [{"off": False, "on": True}[c] for c in args.checkpointing.split(",")]
    held = args.held.split(",")
    if set(families) - set(MODERN) or set(variants) - set(MODERN_VARIANTS) or set(held) - set(HELD):
        parser.error(f"--families from {','.join(MODERN)}; --variants from {','.join(MODERN_VARIANTS)}; --held from "
                     f"fp32,bf16")
    out = Path(args.out or (ROOT / "runs" if args.tiny else ROOT / "benchmarks" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    stem = "scale-vae-bf16" if args.vae_bf16 else "scale"
    md_path, jsonl_path = out / f"{stem}.md", out / f"{stem}.jsonl"
    scale = "tiny" if args.tiny else "full"
    fake = FakeTensorMode(allow_non_fake_inputs=True)  # one mode: the models' parameters and the call's tensors

    import diffusers
    command = " ".join(sys.argv[1:] if argv is None else argv)
    header = ["# ESTIMATED memory and FLOPs of one guided iteration at scale ("
              + ("TINY stand-ins: a test of the script, not an estimate" if args.tiny else
                 "SDXL base 1.0, SD 3.5 medium, FLUX.1-dev; the real architectures with fake weights") + ")", "",
              f"- command: `python benchmarks/scale.py{' ' + command if command else ''}`",
              f"- no GPU (CPU {platform.machine()}; FakeTensorMode: shapes and dtypes only); torch {torch.__version__}, "
              f"diffusers {diffusers.__version__}, python {platform.python_version()}, {time.strftime('%Y-%m-%d')}",
              "- per case: one `FeatureInversion.guided_output` (the prior's own denoise and decode, the preset's "
              "extractor, the guidance's backward) at the middle step of the preset's schedule, bf16 autocast, "
              "w = 4; " + ("CUDA autocast's float32 policy emulated for group_norm/layer_norm" if not args.cpu_norms
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
              "attention) over the whole call: forward, backward, and with checkpointing the recomputed forward"]
    tmp = tempfile.mkdtemp(prefix="scale_", dir=scratch_dir(10**8))
    rows, presets = [], []
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
                          f"{spec['scheduler']['_class_name']} ({settings['steps']} steps, the middle one); prompt "
                          f"embeddings {spec['embeds']}; extractor {description}, {millions(extractor.network):.1f}M "
                          f"parameters, input {extractor.preprocess.size} {extractor.preprocess.interpolation}, "
                          f"autocast {extractor.autocast}, feature {dim}")
            print(f"[scale] {family}: built in {time.perf_counter() - start:.1f} s", flush=True)
            for resolution in resolutions:
                priors = {dtype: modern_prior(family, folder, resolution, denoisers[dtype], vae) for dtype in held}
                for prior in priors.values():
                    prior.vae_upcast = False if args.vae_bf16 else None  # as the constructor's vae_upcast sets it
                for variant in variants:
                    for ckpt in ckpts:
                        for batch in batches:
                            row = {"family": family, "prior": spec["name"], "resolution": resolution, "batch": batch,
                                   "ckpt": "on" if ckpt else "off", "variant": variant}
                            for dtype, prior in priors.items():
                                set_checkpointing(prior, ckpt)
                                module = FeatureInversion(prior, extractor, guidance=VARIANTS[variant](None),
                                                          num_inference_steps=settings["steps"], progress=False)
                                start = time.perf_counter()
                                try:
                                    got = estimate(module, batch, dim, fake, not args.cpu_norms)
                                except RuntimeError as err:
                                    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
                                    continue
                                resident = resident_bytes(module) / GiB
                                row |= {f"resident_{dtype}": resident, f"created_{dtype}": got["created_gib"],
                                        f"peak_{dtype}": resident + got["created_gib"],
                                        f"fits_{dtype}": fits(resident + got["created_gib"]),
                                        f"seconds_{dtype}": round(time.perf_counter() - start, 1)}
                                row.setdefault("gflops", got["gflops"])
                            rows.append(row)
                            print("[scale] " + json.dumps(row), flush=True)
                            md_path.write_text(render(header, rows, presets))
            mine = next((r for r in rows if r["family"] == family and r["resolution"] == settings["resolution"]
                         and r["batch"] == settings["batch"] and r["ckpt"] == ("on" if settings["checkpointing"] else
                                                                                "off")
                         and VARIANTS[r["variant"]](None).__class__.__name__ == settings["guidance"]), None)
            if mine is not None:
                iterations = settings["steps"] * preset_recurrence(spec["preset"])
                presets.append(f"| {spec['preset']} | {mine['resolution']} | {mine['batch']} | {mine['ckpt']} | "
                               f"{mine['variant']} | {cell(mine, 'peak_fp32')} / {cell(mine, 'peak_bf16')} | "
                               f"{mine.get('fits_fp32', '-')} | {mine.get('fits_bf16', '-')} | {iterations} | "
                               f"{iterations * mine.get('gflops', 0) / mine['batch'] / 1e3:,.1f} |")
            del denoiser, denoisers, vae, extractor
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(header, rows, presets)
    md_path.write_text(text)
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(text)
    print(f"[scale] wrote {md_path} and {jsonl_path} in {time.perf_counter() - began:.0f} s", flush=True)
    return 0


def preset_recurrence(preset: str) -> int:
    """Guided iterations per step of ``configs/<preset>.yaml`` (K; no early steps in the modern presets)."""
    import yaml
    model = yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text())["model"]["init_args"]
    return model.get("recurrence", 1)


if __name__ == "__main__":
    raise SystemExit(main())
