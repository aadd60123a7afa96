"""Peak GPU memory and time of one guided iteration at full scale (issue 3, item 4).

Stable Diffusion 1.5 at 512x512 (UNet + VAE decoder, forward and backward to the latent) with each of the
paper's three extractors -- OpenCLIP RN50 (quickgelu, 224 px), torchvision ResNet-50 (224 px) and torchvision
ViT-H/14 at 518 px -- at batch 1 and 4, with and without gradient checkpointing of the UNet and VAE decoder,
under bf16 autocast (as Lightning's ``precision: bf16-mixed`` wraps ``predict_step``) and optionally float32.

All weights are random (memory and speed do not depend on their values), so nothing is downloaded: an
SD-1.5-shaped folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) is built from SD 1.5's configs and
saved with ``StableDiffusionPipeline.save_pretrained``, then loaded through ``lit_featinv.StableDiffusionPrior``
with the paper presets' scheduler settings, so the real loading, decoding and guidance code is what is measured.
The VAE keeps diffusers' default ``force_upcast: true`` (as CompVis/stable-diffusion-v1-4's VAE config, which
does not set it): the decoder runs in float32 even under bf16 autocast, as in a real run.

One case = ``FeatureInversion(prior, extractor, ...)`` and its ``guided_output(scheduler, sample, t, abar, target,
w=4.0)`` at the middle of a 1000-step DDPM schedule, called exactly as the loop calls it (under ``torch.no_grad``,
as Lightning's predict loop with ``inference_mode: false``, and autocast); ``--warmup`` untimed calls, then
``--iters`` timed calls (median, ``torch.cuda.synchronize`` around each). Reported per case: the peak of
``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` over the timed calls (reset after the warm-up; they
include the resident weights: UNet, whole VAE, extractor), the memory the device shows in use right after them
(``mem_get_info``: reserved + CUDA context, about what nvidia-smi shows), ms per iteration and per image.
"fits 24 GB": yes = that device-in-use figure <= 24e9 bytes (22.35 GiB: an A10 or L4 offers ~22.5 GiB, an
RTX 3090/4090 24 GiB), tight = only the peak allocation + the context fits (no allocator slack), else no.
One prior serves every case (only the extractor changes; checkpointing is switched with diffusers'
``enable/disable_gradient_checkpointing``, which is what ``StableDiffusionPrior(gradient_checkpointing=True)``
calls); extractors wait on the CPU while another one runs. Out-of-memory is caught per case and reported.
Results are written after every case (a run stopped by a time limit keeps what it measured) to ``$OUT/memory.md``
+ ``$OUT/memory.jsonl`` when ``$OUT`` is set, else ``runs/memory.md`` + ``runs/memory.jsonl`` (or ``--out DIR``).

``--estimate``: no GPU needed. Each case is one ``guided_output`` call on fake tensors (``FakeTensorMode``: shapes
and dtypes, no values, no compute) under the CPU's autocast rules, with the real (random) weights resident; it reports
the weights plus the peak of the tensors the call creates (``PeakTensorBytes``), what ``max_memory_allocated`` would
show if the GPU's kernels made the same tensors, to ``memory-estimate.md`` / ``.jsonl``. An estimate, not a
measurement: no CUDA context, cuDNN/cuBLAS workspaces or allocator slack, and CPU autocast keeps GroupNorm/LayerNorm
outputs in bf16 (CUDA autocast: float32). ``python benchmarks/memory.py --estimate --dtypes bf16,fp32`` takes about
2 minutes on 2 CPU cores and 8 GB of memory; README "Benchmarks" has its table beside the one GPU measurement there
is (docs/method.md: H200, ResNet-50, no checkpointing), which it matches within 8% except float32 at batch 1.

``--no-vae-upcast``: the prior is built with ``vae_upcast=False`` (the VAE decodes in bf16 under autocast); results go
to ``memory[-estimate]-vae-bf16.md`` / ``.jsonl``.

``--tiny``: the same code path with tiny configs (16x16 images, tiny CLIP-RN / ResNet-18 / ViT-B/16 at 32 px) on
the CPU in a few seconds, for tests (tests/test_memory_script.py); CPU memory is not measured (n/a).

Run on a GPU machine (a later session with a lent H100/H200, through the device tool; see its README):

1. Here, once, where pip reaches the index: the packages the GPU image lacks, as wheels, in ``.whl/`` (already in
   .gitignore). The image has torch, torchvision, timm, lightning, transformers, tokenizers, accelerate,
   huggingface_hub (1.33; diffusers 0.42.1 needs >= 1.32), safetensors, regex, requests, numpy, pillow, tqdm; it
   lacks diffusers, open_clip_torch and open_clip's ftfy -> wcwidth (all pure Python). jsonargparse is not needed
   (the script does not import lit_featinv.cli). This command was checked on the CPU machine (2026-11): it
   fetches 4 py3-none-any wheels, 8 MB::

       python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
         -d .whl diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0

2. One device call, ``carry: [".whl"]``, ``timeout_s: 560`` (each run stops starting cases after its
   ``--time-limit`` and has always written what it measured; the second reuses the first's SD folder and measures
   the ``vae_upcast=False`` variant in bf16)::

       python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 benchmarks/memory.py --dtypes bf16,fp32 --time-limit 300 --folder /dev/shm/sd 2>&1 | tee $OUT/memory.log; python3 benchmarks/memory.py --no-vae-upcast --time-limit 60 --folder /dev/shm/sd 2>&1 | tee $OUT/memory-vae-bf16.log

   then ``give_back``. The results come back as memory.md/.jsonl/.log and memory-vae-bf16.md/.jsonl/.log under
   ``files_at``; then compare them with benchmarks/results/memory-estimate*.md and replace README's estimate.

Time on paper (H100; H200 figures from docs/method.md "Cost at full scale"): set-up -- random init of SD
(1.07B parameters with the text encoder) and ViT-H/14 (632M) on 16 CPU cores, ~4.4 GB written to and read from
/dev/shm -- about 30-90 s. A bf16 iteration is ~0.1 s at batch 1 and ~0.25 s at batch 4 with ResNet-50; ViT-H/14
at 518 px (~1 TFLOP forward per image, ~3 with backward) adds roughly 10-30 ms per image in bf16; checkpointing
adds ~30%. 12 bf16 cases x (1 warm-up + 3 timed) is then under a minute, first-call (cuDNN/cuBLAS) set-up
included. float32 (TF32 off for matmuls; 1.1 s per iteration at batch 4 with ResNet-50 on an H200, ViT-H/14 adds
perhaps 0.5 s) adds ~12 x 4 x <=2 s, about 1-1.5 min. Total ~3-4 min (the second run ~1.5 min more), inside
560 s; bf16 runs first so a time limit drops float32 cases first. Heaviest case: ViT-H/14 at batch 4 in float32
without checkpointing, 45.6 GiB by ``--estimate`` (bf16: 38.8), inside the H100's 80 GB.
Expected for the 24 GB question: bf16 batch 1 with ResNet-50 peaked at 11.1 GiB on the H200 (docs/method.md), and
ViT-H/14 adds ~2.4 GiB of float32 weights and ~2 GiB of activations, so every preset's batch 1 should fit; float32
batch 1 (23.9 GiB with ResNet-50) should not.
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
import weakref
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout (the GPU machine does not install the package)

from lit_featinv import (FeatureInversion, OpenClipExtractor, StableDiffusionPrior, TorchvisionExtractor,  # noqa: E402
                         UNetGradient)
from lit_featinv.sampling import alpha_bar, fork  # noqa: E402

GiB = 2**30
LIMIT_24GB = 24 * 10**9 / GiB  # 22.35 GiB: the smallest "24 GB" cards (A10, L4) offer ~22.5 GiB, an RTX 4090 24
CONTEXT_GIB, SLACK = 0.5, 1.15  # --estimate: a CUDA context, and the caching allocator's reserved / allocated

# A hand-made CLIP BPE vocabulary (as tests/conftest.py): the prompt is empty, so only <start>/<end>/pad are used.
VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>", "low</w>",
         "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>"]

# SD 1.5 (runwayml/stable-diffusion-v1-5, same shapes as CompVis v1-4) and a tiny stand-in with the same block types.
UNET = {
    "full": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 norm_num_groups=32, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    "tiny": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                 cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}
VAE = {
    "full": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                 block_out_channels=(128, 256, 512, 512), norm_num_groups=32,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                 sample_size=512, scaling_factor=0.18215),
    "tiny": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                 norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16, scaling_factor=0.18215),
}
TEXT = {  # CLIP ViT-L/14's text tower (SD 1.x's text encoder)
    "full": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                 num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768),
    "tiny": dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                 num_hidden_layers=2, max_position_embeddings=16),
}
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 clip_sample=False, steps_offset=1, prediction_type="epsilon")
# The paper presets' prior (configs/paper/*.yaml): ancestral DDPM, fixed_large variance, no clamping.
PRIOR_SCHEDULER = ("diffusers.DDPMScheduler", {"timestep_spacing": "trailing", "variance_type": "fixed_large",
                                              "clip_sample": False})  # as configs/paper/*.yaml
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


def build_sd_folder(folder: Path, scale: str) -> Path:
    """An SD-shaped pipeline folder with random weights, made offline (model_index.json and 5 subfolders)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    files = folder / "tokenizer_src"
    files.mkdir(parents=True)
    (files / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}))
    (files / "merges.txt").write_text("#version: 0.2\nl o\nlo w</w>\ne r</w>\n")
    length = TEXT[scale]["max_position_embeddings"]
    tokenizer = CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"), model_max_length=length)
    torch.manual_seed(0)
    bos, eos = VOCAB.index("<|startoftext|>"), VOCAB.index("<|endoftext|>")
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT[scale], bos_token_id=bos, eos_token_id=eos, pad_token_id=eos))
    unet = UNet2DConditionModel(**UNET[scale])
    vae = AutoencoderKL(**VAE[scale])
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDPMScheduler(**SCHEDULER), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    shutil.rmtree(files)
    return folder


def scratch_dir(need_bytes: int) -> str:
    """/dev/shm when it has room (fast), else the default temp folder."""
    shm = "/dev/shm"
    try:
        if os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1.5 * need_bytes:
            return shm
    except OSError:
        pass
    return tempfile.gettempdir()


def preset_extractor_settings(preset: str) -> dict:
    """``preprocess`` and ``autocast`` of the extractor of ``configs/paper/<preset>.yaml``: what the run uses."""
    import yaml
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "paper" / f"{preset}.yaml").read_text())
    args = config["model"]["init_args"]["extractor"]["init_args"]
    return {"preprocess": args.get("preprocess") or {}, "autocast": args.get("autocast", False)}


def paper_torchvision(name: str, weights: str | None, preset: str, model_kwargs: dict | None = None, **settings):
    """A random-weight torchvision extractor with the preprocessing and precision of ``configs/paper/<preset>.yaml``
    (over its weights' own ``weights.transforms()``), built as ``TorchvisionExtractor(name, weights=...)`` builds it."""
    from torchvision.models import get_model_weights

    settings = preset_extractor_settings(preset) | settings
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


def tiny_clip() -> OpenClipExtractor:
    import open_clip
    with tempfile.TemporaryDirectory(prefix="memory_clip_") as folder:
        path = Path(folder) / "tiny-clip-rn.json"
        path.write_text(json.dumps(TINY_CLIP))
        open_clip.add_model_config(path)
        return paper_clip("tiny-clip-rn")


# name: (what it is, builder); preprocessing and precision (autocast) as in configs/paper/*.yaml
EXTRACTORS = {
    "full": {
        "clip_rn50": ("open_clip RN50-quickgelu, 224 px", lambda: paper_clip("RN50-quickgelu")),
        "resnet50": ("torchvision resnet50, 224 px (configs/paper/resnet50.yaml preprocessing)",
                     lambda: paper_torchvision("resnet50", "IMAGENET1K_V1", "resnet50")),
        "vit_h14_518": ("torchvision vit_h_14 (IMAGENET1K_SWAG_E2E_V1 preprocessing), 518 px, float32 (paper/vit_h14.yaml)",
                        lambda: paper_torchvision("vit_h_14", "IMAGENET1K_SWAG_E2E_V1", "vit_h14", {"image_size": 518})),
        "vit_h14_518_bf16": ("the same under autocast (paper/vit_h14_fast.yaml)",
                             lambda: paper_torchvision("vit_h_14", "IMAGENET1K_SWAG_E2E_V1", "vit_h14_fast",
                                                       {"image_size": 518})),
    },
    "tiny": {
        "clip_rn50": ("tiny open_clip modified ResNet, 32 px", tiny_clip),
        "resnet50": ("torchvision resnet18, 224 px", lambda: paper_torchvision("resnet18", None, "resnet50")),
        "vit_h14_518": ("torchvision vit_b_16, 32 px",
                        lambda: paper_torchvision("vit_b_16", None, "vit_h14", {"image_size": 32})),
        "vit_h14_518_bf16": ("torchvision vit_b_16, 32 px, autocast",
                             lambda: paper_torchvision("vit_b_16", None, "vit_h14_fast", {"image_size": 32})),
    },
}


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


def autocast(device: torch.device, dtype: str):
    """bf16: autocast as Lightning's bf16-mixed (networks in bf16, weights kept float32); fp32: none."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


class PeakTensorBytes(TorchDispatchMode):
    """Live bytes of the storages that ops create inside it, and their peak (fake tensors count too)."""

    def __init__(self):
        super().__init__()
        self.live, self.now, self.peak = {}, 0, 0

    def _release(self, key: int) -> None:
        self.now -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()  # one Python object per storage while it lives
                if id(storage) not in self.live:
                    self.live[id(storage)] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._release, id(storage))
        return out


def resident_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def estimate_case(module, scheduler, sample, t, abar, target, dtype: str) -> dict:
    """Peak tensor memory of one ``guided_output`` call with fake tensors (no compute): resident weights + the
    peak of the tensors it creates, under the CPU's autocast rules. Shapes and dtypes only, no allocator."""
    with PeakTensorBytes() as peak, torch.no_grad(), autocast(torch.device("cpu"), dtype):
        try:
            module.guided_output(scheduler, sample, t, abar, target, w=4.0)
        except DataDependentOutputException:  # Guidance.shape's finiteness check reads values: the forward and
            pass                              # backward passes are done by then, the rest is latent-sized
    resident = resident_bytes(module)
    row = {"resident_gib": resident / GiB, "activations_gib": peak.peak / GiB,
           "est_peak_gib": (resident + peak.peak) / GiB}
    row["fits_24gb"] = ("likely" if row["est_peak_gib"] * SLACK + CONTEXT_GIB <= LIMIT_24GB else
                        "tight" if row["est_peak_gib"] + CONTEXT_GIB <= LIMIT_24GB else "no")
    return row


def run_case(prior, extractor, batch: int, dtype: str, device: torch.device, warmup: int, iters: int,
             steps: int = 1000, estimate: bool = False) -> dict:
    """Warm-up + timed calls of ``guided_output`` for one configuration: peak memory and ms per iteration."""
    module = FeatureInversion(prior, extractor, num_inference_steps=steps,
                              guidance=UNetGradient(scale=4.0, clip_theta=2.0), recurrence=8, progress=False).to(device)
    scheduler = fork(module.backbone.scheduler)
    scheduler.set_timesteps(steps, device=device)
    i = len(scheduler.timesteps) // 2
    t = scheduler.timesteps[i]
    generator = torch.Generator().manual_seed(0)
    abar = alpha_bar(scheduler, i)  # scheduler state stays real
    with FakeTensorMode(allow_non_fake_inputs=True) if estimate else nullcontext():
        sample = (torch.randn(batch, *prior.sample_shape, generator=generator) * scheduler.init_noise_sigma).to(device)
        abar = abar.to(sample)
        with torch.no_grad(), autocast(device, dtype):
            dim = extractor(torch.rand(1, 3, 64, 64, generator=generator).to(device)).shape[1]
        target = torch.randn(batch, dim, generator=generator).to(device)
        if estimate:
            return estimate_case(module, scheduler, sample, t, abar, target, dtype) | {"feature_dim": dim}
    out, times, nonfinite = None, [], 0

    def call():
        nonlocal out, nonfinite
        with warnings.catch_warnings(record=True) as caught, torch.no_grad(), autocast(device, dtype):
            warnings.simplefilter("always")
            # the previous output stays alive during the call, as in the loop
            out = module.guided_output(scheduler, sample, t, abar, target, w=4.0)
        nonfinite += sum("non-finite" in str(w.message) for w in caught)

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
           "finite": bool(torch.isfinite(out[0]).all() and torch.isfinite(out[2]).all()) and nonfinite == 0,
           "feature_dim": dim}
    if cuda:
        free_bytes, total = torch.cuda.mem_get_info(device)
        row |= {"resident_gib": resident / GiB, "peak_alloc_gib": torch.cuda.max_memory_allocated(device) / GiB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GiB,
                "device_used_gib": (total - free_bytes) / GiB}
        context = row["device_used_gib"] - row["peak_reserved_gib"]  # CUDA context, other processes
        row["fits_24gb"] = ("yes" if row["device_used_gib"] <= LIMIT_24GB else
                            "tight" if row["peak_alloc_gib"] + context <= LIMIT_24GB else "no")
    del out, module
    return row


def gib(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "n/a"


def table(header: list[str], rows: list[dict]) -> str:
    lines = header + ["", "| extractor | precision | batch | grad ckpt | peak alloc GiB | peak reserved GiB | "
                          "device used GiB | resident GiB | ms / iter | ms / image | fits 24 GB | note |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "ms" in r:
            fits = r.get("fits_24gb", "n/a")
            note = "" if r["finite"] else "non-finite output/gradient"
            lines.append(f"| {r['extractor']} | {r['precision']} | {r['batch']} | {r['ckpt']} | "
                         f"{gib(r, 'peak_alloc_gib')} | {gib(r, 'peak_reserved_gib')} | {gib(r, 'device_used_gib')} | "
                         f"{gib(r, 'resident_gib')} | {r['ms']:.1f} | {r['ms'] / r['batch']:.1f} | {fits} | {note} |")
        else:
            lines.append(f"| {r['extractor']} | {r['precision']} | {r['batch']} | {r['ckpt']} | "
                         f"{'- | ' * 6}{'no' if r.get('oom') else '-'} | {r['error']} |")
    return "\n".join(lines) + "\n"


def estimate_table(header: list[str], rows: list[dict]) -> str:
    lines = header + ["", "| extractor | precision | batch | grad ckpt | resident GiB | peak of created tensors GiB | "
                          "estimated peak GiB | fits 24 GB (est.) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = ([gib(r, "resident_gib"), gib(r, "activations_gib"), gib(r, "est_peak_gib"), r["fits_24gb"]]
                 if "est_peak_gib" in r else ["-", "-", "-", r["error"]])
        lines.append(f"| {r['extractor']} | {r['precision']} | {r['batch']} | {r['ckpt']} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs (CPU test of the script)")
    parser.add_argument("--no-vae-upcast", action="store_true",
                        help="StableDiffusionPrior(vae_upcast=False): the VAE decodes in bf16 under autocast")
    parser.add_argument("--estimate", action="store_true",
                        help="no GPU: peak tensor memory with fake tensors on the CPU (shapes only, no compute)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtypes", default="bf16", help="comma list of bf16 (autocast) and fp32")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--extractors", default="clip_rn50,resnet50,vit_h14_518,vit_h14_518_bf16")
    parser.add_argument("--checkpointing", default="off,on", help="gradient checkpointing of UNet + VAE: off,on")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per case (default 3; tiny 1)")
    parser.add_argument("--time-limit", type=float, default=0, help="start no case after this many seconds (0: none)")
    parser.add_argument("--out", default=None, help="folder for memory.md / memory.jsonl (default $OUT or runs/)")
    parser.add_argument("--folder", default=None, help="keep the SD folder here (default: a temp folder, removed)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    scale = "tiny" if args.tiny else "full"
    iters = args.iters or (1 if args.tiny else 3)
    device = torch.device("cpu" if args.estimate else args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.tiny and device.type == "cpu":
        torch.set_num_threads(1)  # tiny models: more threads only add overhead
    dtypes, batches = args.dtypes.split(","), [int(b) for b in args.batches.split(",")]
    ckpts = [{"off": False, "on": True}[c] for c in args.checkpointing.split(",")]
    names = args.extractors.split(",")
    if set(dtypes) - {"bf16", "fp32"} or set(names) - set(EXTRACTORS[scale]):
        parser.error(f"--dtypes from bf16,fp32; --extractors from {','.join(EXTRACTORS[scale])}")
    out_dir = Path(args.out or os.environ.get("OUT") or ROOT / "runs")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = ("memory-estimate" if args.estimate else "memory") + ("-vae-bf16" if args.no_vae_upcast else "")
    md_path, jsonl_path = out_dir / f"{stem}.md", out_dir / f"{stem}.jsonl"
    render = estimate_table if args.estimate else table
    jsonl_path.write_text("")

    import diffusers
    gpu = (f"{torch.cuda.get_device_name(device)}, "
           f"{torch.cuda.get_device_properties(device).total_memory / GiB:.1f} GiB"
           if device.type == "cuda" else f"none (CPU: {platform.processor() or platform.machine()}"
           + ("; fake tensors: shapes and dtypes only, CPU autocast rules, no allocator)" if args.estimate else
              "; memory n/a)"))
    print(f"[memory] device {device}: {gpu}", flush=True)

    tmp = None
    if args.folder:
        folder = Path(args.folder)
    else:
        tmp = tempfile.mkdtemp(prefix="memory_sd_", dir=scratch_dir(5 * 10**9 if scale == "full" else 10**6))
        folder = Path(tmp) / "sd"
    try:
        if not (folder / "model_index.json").exists():
            start = time.perf_counter()
            build_sd_folder(folder, scale)
            print(f"[memory] built random SD ({scale}) in {folder} in {time.perf_counter() - start:.1f} s", flush=True)
        start = time.perf_counter()
        scheduler_cls, scheduler_config = PRIOR_SCHEDULER
        prior = StableDiffusionPrior(str(folder), scheduler=scheduler_cls, scheduler_config=scheduler_config,
                                     vae_upcast=False if args.no_vae_upcast else None).to(device)
        print(f"[memory] loaded the prior in {time.perf_counter() - start:.1f} s", flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    extractors = {}
    for name in names:
        start = time.perf_counter()
        extractors[name] = EXTRACTORS[scale][name][1]()
        print(f"[memory] built {name} ({millions(extractors[name].network):.1f}M parameters) "
              f"in {time.perf_counter() - start:.1f} s", flush=True)

    matmul = getattr(torch.backends.cuda.matmul, "allow_tf32", None)
    header = [
        ("# ESTIMATED peak" if args.estimate else "# Peak") + " memory of one guided iteration ("
        + ("TINY stand-in configs: a test of the script, not a measurement" if args.tiny
           else "SD 1.5 at 512x512; random weights of the real architectures") + ")", "",
        f"- command: `python benchmarks/memory.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- GPU: {gpu}",
        f"- torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers {diffusers.__version__}, "
        f"python {platform.python_version()}; float32 matmul TF32 {matmul}, "
        f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}",
        f"- prior: UNet {millions(prior.unet):.1f}M + VAE {millions(prior.vae):.1f}M parameters (decoder "
        f"{millions(prior.vae.decoder):.1f}M), float32 weights, latents {tuple(prior.sample_shape)}, VAE force_upcast "
        f"{getattr(prior.vae.config, 'force_upcast', False)}, vae_upcast {prior.vae_upcast} (decoder in "
        f"{'bf16' if prior.vae_upcast is False else 'float32'} under autocast); "
        f"scheduler {PRIOR_SCHEDULER[0]} 1000 steps, t = the middle one, w = 4",
        "- extractors: " + "; ".join(f"{n} = {EXTRACTORS[scale][n][0]}, {millions(e.network):.1f}M parameters, "
                                     f"input {e.preprocess.size} {e.preprocess.interpolation}"
                                     for n, e in extractors.items()),
        f"- per case: {args.warmup} warm-up + {iters} timed `guided_output` calls (median time); peaks over the "
        "timed calls; resident = allocated before them (weights of the prior and the extractor + the last call's "
        "outputs); device used = total - free right after them (reserved + CUDA context); fits 24 GB: yes = device "
        "used <= 24e9 bytes, tight = only peak alloc + context fits (the allocator would have to run without slack), "
        "no = neither" if not args.estimate else
        "- per case: one `guided_output` call on fake tensors (torch FakeTensorMode: no values, no compute); "
        "resident = parameters + buffers of the prior (UNet, whole VAE) and the extractor; peak of created tensors = "
        "the most bytes of storages created by the call alive at once (activations saved for the backward pass, "
        "autocast copies of weights, gradients); estimated peak = the sum, what `max_memory_allocated` would show "
        "if the GPU's kernels made the same tensors. Not counted: the CUDA context, cuDNN/cuBLAS workspaces, "
        "allocator rounding and fragmentation; CPU autocast keeps GroupNorm/LayerNorm outputs in bf16 where CUDA "
        f"autocast gives float32. fits 24 GB (est.): likely = estimated peak x {SLACK} (allocator slack) + "
        f"{CONTEXT_GIB} GiB (context) <= 22.35 GiB (24e9 bytes), tight = only without the slack, no = neither",
    ]
    rows = []
    for dtype in dtypes:
        for name in names:
            extractor = extractors[name]
            extractor.to(device)
            for ckpt in ckpts:
                set_checkpointing(prior, ckpt)
                for batch in batches:
                    row = {"extractor": name, "precision": "bf16 autocast" if dtype == "bf16" else "float32",
                           "batch": batch, "ckpt": "on" if ckpt else "off"}
                    if args.time_limit and time.perf_counter() - began > args.time_limit:
                        row["error"] = f"skipped: --time-limit {args.time_limit:g} s"
                    else:
                        free(device)
                        error = None
                        try:
                            row |= run_case(prior, extractor, batch, dtype, device, args.warmup, iters,
                                            estimate=args.estimate)
                        except torch.OutOfMemoryError as err:
                            error, row["oom"] = f"out of memory: {str(err).splitlines()[0][:120]}", True
                        except RuntimeError as err:
                            error = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
                        if error:  # outside the except block: the traceback's frames (and tensors) are gone
                            row["error"] = error
                            free(device)
                    rows.append(row)
                    print("[memory] " + json.dumps(row), flush=True)
                    with jsonl_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    md_path.write_text(render(header, rows))
            extractor.to("cpu")
            free(device)
    set_checkpointing(prior, False)
    text = render(header, rows)
    md_path.write_text(text)
    print(text)
    print(f"[memory] wrote {md_path} and {jsonl_path} in {time.perf_counter() - began:.0f} s total", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
