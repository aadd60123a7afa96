"""Seconds per guided iteration and peak GPU memory at full scale, on one GPU (issue 9, item 5).

    python benchmarks/gpu.py            # one H100/H200, about 4 min; writes $OUT/gpu.md and gpu.jsonl (else runs/)

Stable Diffusion 1.5 at 512x512 with random weights of the real architectures (speed and memory do not depend on the
values; nothing is downloaded): an SD-1.5-shaped folder built from its configs and saved with
``StableDiffusionPipeline.save_pretrained``, loaded through ``lit_featinv.StableDiffusionPrior`` with the paper presets'
scheduler, so the real loading, decoding and guidance code is what is measured; TAESD's architecture (diffusers
``AutoencoderTiny`` with its default config, as ``madebyollin/taesd``) as the tiny decoder; the paper's extractors with
their presets' preprocessing and precision (open_clip RN50, torchvision ResNet-50, ViT-H/14 at 518 px in bf16 as
``paper/vit_h14_fast.yaml``).

One case = one guided iteration as the loop runs it: ``FeatureInversion.guided_output`` (under ``torch.no_grad`` as
Lightning's predict with ``inference_mode: false``) and the scoring of its best-image candidate (``score``: the
extractor's float32 forward), under bf16 autocast as Lightning's ``bf16-mixed`` (``--dtypes bf16,fp32`` adds float32),
at the middle of a 1000-step schedule, w = 4. Cases: guidance variant (the UNet gradient, the clean-estimate gradient,
each with the VAE or the tiny decoder in the gradient) x extractor x batch 1 and 4 x gradient checkpointing of the UNet
and VAE off/on; then the throughput options on the default variant with ResNet-50: ``channels_last`` and
``torch.compile`` of the UNet (``DiffusionPrior(channels_last=..., compile=...)``). Per case: ``--warmup`` untimed
and ``--iters`` timed calls (median, synchronised), the peak of ``max_memory_allocated`` / ``max_memory_reserved`` over
the timed calls (weights included), what the device shows in use after them (``mem_get_info``). "fits 24 GB": yes =
device in use <= 24e9 bytes (an A10/L4 offers ~22.5 GiB), tight = only peak allocation + CUDA context fits, else no.
Out of memory is caught per case; results are written after every case, and ``--time-limit`` stops starting cases.

On a lent GPU (device tool; see its README): the GPU image has torch, torchvision, timm, lightning and transformers
but not diffusers, open_clip_torch or open_clip's ftfy -> wcwidth. Here, once, where pip reaches the index::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
      -d .whl diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0

then one device call with ``carry: [".whl"]`` and ``timeout_s: 560``::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site \\
      HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && nvidia-smi --query-gpu=name,memory.total --format=csv && \\
      python3 benchmarks/gpu.py --time-limit 420 2>&1 | tee $OUT/gpu.log

and ``give_back``; commit ``gpu.md`` under benchmarks/results/ and put its table in the README.
Planned time on an H100 (not yet run): building and loading SD (1.07B parameters) and ViT-H/14 (632M) ~1-1.5 min;
48 bf16 cases x 4 calls at ~0.1-0.3 s, ~1 min; compiling the UNet ~1 min.

``tests/test_gpu_script.py`` runs this script on the CPU with tiny stand-ins (``main(argv, extractors=...)``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout (the GPU machine does not install the package)

from lit_featinv import (CleanEstimateGradient, FeatureInversion, OpenClipExtractor, StableDiffusionPrior,  # noqa: E402
                         TorchvisionExtractor, UNetGradient)
from lit_featinv.method import alpha_bar, fork, score  # noqa: E402

GiB = 2**30
LIMIT_24GB = 24 * 10**9 / GiB  # 22.35 GiB: the smallest "24 GB" cards (A10, L4) offer ~22.5 GiB

# A hand-made CLIP BPE vocabulary: the prompt is empty, so only <start>/<end>/pad are used.
VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>", "low</w>",
         "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>"]
# SD 1.5 (runwayml/stable-diffusion-v1-5, the shapes of CompVis v1-4)
UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
           norm_num_groups=32, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           sample_size=512, scaling_factor=0.18215)
TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)  # CLIP ViT-L/14's text tower
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 clip_sample=False, steps_offset=1, prediction_type="epsilon")
# The paper presets' prior (configs/paper/*.yaml): ancestral DDPM, fixed_large variance, no clamping.
PRIOR_SCHEDULER = ("diffusers.DDPMScheduler", {"timestep_spacing": "trailing", "variance_type": "fixed_large",
                                              "clip_sample": False})
# name: guidance with the tiny decoder folder or None
VARIANTS: dict[str, Callable] = {
    "unet_gradient": lambda tiny: UNetGradient(scale=4.0),
    "clean_estimate": lambda tiny: CleanEstimateGradient(scale=4.0),
    "unet_gradient+tiny_decoder": lambda tiny: UNetGradient(scale=4.0, decoder=tiny),
    "clean_estimate+tiny_decoder": lambda tiny: CleanEstimateGradient(scale=4.0, decoder=tiny),
}


def build_sd_folder(folder: Path) -> Path:
    """An SD-1.5-shaped pipeline folder with random weights, made offline (model_index.json and 5 subfolders)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    files = folder / "tokenizer_src"
    files.mkdir(parents=True)
    (files / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}))
    (files / "merges.txt").write_text("#version: 0.2\nl o\nlo w</w>\ne r</w>\n")
    tokenizer = CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"),
                              model_max_length=TEXT["max_position_embeddings"])
    torch.manual_seed(0)
    bos, eos = VOCAB.index("<|startoftext|>"), VOCAB.index("<|endoftext|>")
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos))
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**VAE), text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=UNet2DConditionModel(**UNET), scheduler=DDPMScheduler(**SCHEDULER),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    shutil.rmtree(files)
    return folder


def build_tiny_decoder(folder: Path) -> Path:
    """TAESD's architecture (diffusers ``AutoencoderTiny`` defaults, as ``madebyollin/taesd``), random weights."""
    from diffusers import AutoencoderTiny
    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(folder)
    return folder


def preset_extractor_settings(preset: str) -> dict:
    """``preprocess`` and ``autocast`` of the extractor of ``configs/paper/<preset>.yaml``: what the run uses."""
    import yaml
    config = yaml.safe_load((ROOT / "configs" / "paper" / f"{preset}.yaml").read_text())
    args = config["model"]["init_args"]["extractor"]["init_args"]
    return {"preprocess": args.get("preprocess") or {}, "autocast": args.get("autocast", False)}


def paper_torchvision(name: str, weights: str | None, preset: str, model_kwargs: dict | None = None):
    """A random-weight torchvision extractor with the preprocessing and precision of ``configs/paper/<preset>.yaml``
    (over its weights' own ``weights.transforms()``), built as ``TorchvisionExtractor(name, weights=...)`` builds it."""
    from torchvision.models import get_model_weights

    settings = preset_extractor_settings(preset)
    preprocess = {}
    if weights:  # with weights=None the crop comes from the network's image_size but resize/interpolation don't
        transform = get_model_weights(name)[weights].transforms()
        preprocess = {"resize": transform.resize_size[0], "crop": transform.crop_size[0],
                      "interpolation": transform.interpolation.value}
    extractor = TorchvisionExtractor(name, weights=None, preprocess=preprocess | settings["preprocess"],
                                     autocast=settings["autocast"], model_kwargs=model_kwargs)
    size = getattr(extractor.network, "image_size", None)  # a ViT takes only its own size
    if size is not None and extractor.preprocess.size != (size, size):
        raise RuntimeError(f"{name}: preprocessing size {extractor.preprocess.size} != the network's {size}")
    return extractor


def paper_clip(name: str) -> OpenClipExtractor:
    return OpenClipExtractor(name, pretrained=None, **preset_extractor_settings("clip_rn50"))


# name: (what it is, builder); preprocessing and precision (autocast) as in configs/paper/*.yaml
EXTRACTORS = {
    "clip_rn50": ("open_clip RN50-quickgelu, 224 px", lambda: paper_clip("RN50-quickgelu")),
    "resnet50": ("torchvision resnet50, 224 px (configs/paper/resnet50.yaml preprocessing)",
                 lambda: paper_torchvision("resnet50", "IMAGENET1K_V1", "resnet50")),
    "vit_h14_518": ("torchvision vit_h_14 (IMAGENET1K_SWAG_E2E_V1 preprocessing), 518 px, float32 (paper/vit_h14.yaml)",
                    lambda: paper_torchvision("vit_h_14", "IMAGENET1K_SWAG_E2E_V1", "vit_h14", {"image_size": 518})),
    "vit_h14_518_bf16": ("the same under autocast (paper/vit_h14_fast.yaml)",
                         lambda: paper_torchvision("vit_h_14", "IMAGENET1K_SWAG_E2E_V1", "vit_h14_fast",
                                                   {"image_size": 518})),
}


def scratch_dir(need_bytes: int) -> str:
    """/dev/shm when it has room (fast), else the default temp folder."""
    try:
        if os.access("/dev/shm", os.W_OK) and shutil.disk_usage("/dev/shm").free > 1.5 * need_bytes:
            return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


def set_checkpointing(prior: StableDiffusionPrior, on: bool) -> None:
    """What ``StableDiffusionPrior(gradient_checkpointing=on)`` does to the UNet and the VAE."""
    for model in (prior.unet, prior.vae):
        model.enable_gradient_checkpointing() if on else model.disable_gradient_checkpointing()


def millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_case(module: FeatureInversion, batch: int, dtype: str, device: torch.device, warmup: int, iters: int) -> dict:
    """Warm-up + timed guided iterations (``guided_output`` + scoring the candidate): ms and peak memory."""
    scheduler = fork(module.prior.scheduler)
    scheduler.set_timesteps(1000, device=device)
    i = len(scheduler.timesteps) // 2
    t, abar = scheduler.timesteps[i], alpha_bar(scheduler, i).to(device)
    generator = torch.Generator().manual_seed(0)
    sample = (torch.randn(batch, *module.prior.sample_shape, generator=generator)
              * scheduler.init_noise_sigma).to(device)
    cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    with torch.no_grad(), cast:
        dim = module.extractor(torch.rand(1, 3, 64, 64, generator=generator).to(device)).shape[1]
    target = torch.randn(batch, dim, generator=generator).to(device)
    out, times, nonfinite = None, [], 0

    def call():
        nonlocal out, nonfinite
        with warnings.catch_warnings(record=True) as caught, torch.no_grad(), cast:
            warnings.simplefilter("always")
            out = module.guided_output(scheduler, sample, t, abar, target, 4.0)  # the last output stays alive
            score(module.extractor, module.loss, out[1], target)
        nonfinite += sum("NaN or Inf" in str(w.message) for w in caught)

    for _ in range(warmup):
        call()
    sync(device)
    cuda = device.type == "cuda"
    if cuda:
        resident = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        call()
        sync(device)
        times.append(time.perf_counter() - start)
    row = {"ms": round(1000 * statistics.median(times), 2), "times_ms": [round(1000 * x, 2) for x in times],
           "finite": bool(torch.isfinite(out[0]).all()) and nonfinite == 0}
    if cuda:
        free_bytes, total = torch.cuda.mem_get_info(device)
        row |= {"resident_gib": resident / GiB, "peak_alloc_gib": torch.cuda.max_memory_allocated(device) / GiB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GiB,
                "device_used_gib": (total - free_bytes) / GiB}
        context = row["device_used_gib"] - row["peak_reserved_gib"]  # CUDA context, other processes
        row["fits_24gb"] = ("yes" if row["device_used_gib"] <= LIMIT_24GB else
                            "tight" if row["peak_alloc_gib"] + context <= LIMIT_24GB else "no")
    return row


def gib(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "n/a"


def table(header: list[str], rows: list[dict]) -> str:
    lines = header + ["", "| guidance | extractor | precision | batch | grad ckpt | options | ms / iteration | "
                          "ms / image | peak alloc GiB | peak reserved GiB | device used GiB | fits 24 GB | note |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        head = f"| {r['variant']} | {r['extractor']} | {r['precision']} | {r['batch']} | {r['ckpt']} | {r['options']} |"
        if "ms" in r:
            note = "" if r["finite"] else "non-finite output/gradient"
            lines.append(f"{head} {r['ms']:.1f} | {r['ms'] / r['batch']:.1f} | {gib(r, 'peak_alloc_gib')} | "
                         f"{gib(r, 'peak_reserved_gib')} | {gib(r, 'device_used_gib')} | {r.get('fits_24gb', 'n/a')} "
                         f"| {note} |")
        else:
            lines.append(f"{head} - | - | - | - | - | {'no' if r.get('oom') else '-'} | {r['error']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, extractors: dict | None = None) -> int:
    """``extractors``: {name: (description, builder)} instead of :data:`EXTRACTORS` (the CPU test's tiny ones)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtypes", default="bf16", help="comma list of bf16 (autocast) and fp32")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--extractors", default="clip_rn50,resnet50,vit_h14_518_bf16")
    parser.add_argument("--checkpointing", default="off,on", help="gradient checkpointing of UNet + VAE: off,on")
    parser.add_argument("--throughput", default="channels_last,compile",
                        help="options measured on the first variant and the resnet50 (else first) extractor")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compile case")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=0, help="start no case after this many seconds (0: none)")
    parser.add_argument("--out", default=None, help="folder for gpu.md / gpu.jsonl (default $OUT or runs/)")
    parser.add_argument("--sd", default=None, help="an SD folder to use (default: SD 1.5's shapes, built here)")
    parser.add_argument("--tiny-decoder", default=None, help="an AutoencoderTiny folder (default: TAESD's, built here)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    builders = extractors or EXTRACTORS
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes, batches = args.dtypes.split(","), [int(b) for b in args.batches.split(",")]
    ckpts = [{"off": False, "on": True}[c] for c in args.checkpointing.split(",")]
    names, variants = args.extractors.split(","), args.variants.split(",")
    options = [o for o in args.throughput.split(",") if o]
    if set(dtypes) - {"bf16", "fp32"} or set(names) - set(builders) or set(variants) - set(VARIANTS) or \
            set(options) - {"channels_last", "compile"}:
        parser.error(f"--dtypes from bf16,fp32; --extractors from {','.join(builders)}; --variants from "
                     f"{','.join(VARIANTS)}; --throughput from channels_last,compile")
    out_dir = Path(args.out or os.environ.get("OUT") or ROOT / "runs")
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, jsonl_path = out_dir / "gpu.md", out_dir / "gpu.jsonl"
    jsonl_path.write_text("")

    import diffusers
    gpu = (f"{torch.cuda.get_device_name(device)}, {torch.cuda.get_device_properties(device).total_memory / GiB:.1f} GiB"
           if device.type == "cuda" else f"none (CPU {platform.machine()}: a test of the script, memory n/a)")
    print(f"[gpu] device {device}: {gpu}", flush=True)
    tmp = tempfile.mkdtemp(prefix="gpu_bench_", dir=scratch_dir(5 * 10**9))
    try:
        start = time.perf_counter()
        sd = Path(args.sd) if args.sd else build_sd_folder(Path(tmp) / "sd")
        tiny = args.tiny_decoder or str(build_tiny_decoder(Path(tmp) / "taesd"))
        prior = StableDiffusionPrior(str(sd), scheduler=PRIOR_SCHEDULER[0], scheduler_config=PRIOR_SCHEDULER[1]).to(device)
        guidance = {name: VARIANTS[name](tiny).to(device) for name in variants}
        print(f"[gpu] built and loaded SD and the tiny decoder in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    built = {}
    for name in names:
        start = time.perf_counter()
        built[name] = builders[name][1]()
        print(f"[gpu] built {name} ({millions(built[name].network):.1f}M parameters) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    tiny_params = next((millions(g.decoder) for g in guidance.values() if g.decoder is not None), 0.0)
    header = [
        "# Seconds per guided iteration and peak memory (" + ("SD 1.5 at 512x512, random weights of the real "
                                                              "architectures" if not args.sd else f"prior {sd.name}") + ")",
        "", f"- command: `python benchmarks/gpu.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- device: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers {diffusers.__version__}, "
        f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}",
        f"- prior: UNet {millions(prior.unet):.1f}M + VAE decoder {millions(prior.vae.decoder):.1f}M parameters, "
        f"latents {tuple(prior.sample_shape)}, VAE force_upcast {getattr(prior.vae.config, 'force_upcast', False)}; "
        f"tiny decoder (AutoencoderTiny) {tiny_params:.1f}M; scheduler {PRIOR_SCHEDULER[0]} 1000 steps, the middle one",
        "- extractors: " + "; ".join(f"{n} = {builders[n][0]}, {millions(e.network):.1f}M" for n, e in built.items()),
        f"- per case: {args.warmup} warm-up + {args.iters} timed iterations (guided_output + scoring the candidate), "
        "median; peaks over the timed ones, weights included; device used = total - free after them",
    ]
    rows = []

    def measure(variant: str, name: str, dtype: str, batch: int, ckpt: bool, option: str = "-") -> None:
        row = {"variant": variant, "extractor": name, "precision": "bf16 autocast" if dtype == "bf16" else "float32",
               "batch": batch, "ckpt": "on" if ckpt else "off", "options": option}
        if args.time_limit and time.perf_counter() - began > args.time_limit:
            row["error"] = f"skipped: --time-limit {args.time_limit:g} s"
        else:
            free(device)
            error = None
            module = FeatureInversion(prior, built[name], guidance=guidance[variant], num_inference_steps=1000,
                                      progress=False)
            try:
                row |= run_case(module, batch, dtype, device, args.warmup, args.iters)
            except torch.OutOfMemoryError as err:
                error, row["oom"] = f"out of memory: {str(err).splitlines()[0][:120]}", True
            except RuntimeError as err:
                error = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            del module
            if error:  # outside the except block: the traceback's frames (and tensors) are gone
                row["error"] = error
                free(device)
        rows.append(row)
        print("[gpu] " + json.dumps(row), flush=True)
        with jsonl_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        md_path.write_text(table(header, rows))

    for dtype in dtypes:
        for name in names:
            built[name].to(device)
            for variant in variants:
                for ckpt in ckpts:
                    set_checkpointing(prior, ckpt)
                    for batch in batches:
                        measure(variant, name, dtype, batch, ckpt)
            built[name].to("cpu")
    set_checkpointing(prior, False)
    if options:  # the throughput options, cumulatively, as DiffusionPrior(channels_last=..., compile=...) sets them
        name = "resnet50" if "resnet50" in names else names[0]
        built[name].to(device)
        measure(variants[0], name, dtypes[0], batches[-1], False, "none")
        applied = []
        for option in [o for o in ("channels_last", "compile") if o in options]:
            if option == "channels_last":
                prior.channels_last = True
                prior.speed_up(prior.vae)
            else:
                prior.compile_unet = {"backend": args.compile_backend}
            prior.speed_up(prior.unet)
            applied.append(option if option == "channels_last" else f"compile ({args.compile_backend})")
            measure(variants[0], name, dtypes[0], batches[-1], False, " + ".join(applied))
    text = table(header, rows)
    md_path.write_text(text)
    print(text)
    print(f"[gpu] wrote {md_path} and {jsonl_path} in {time.perf_counter() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
