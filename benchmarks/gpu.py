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

and ``give_back``; commit ``gpu.md`` under benchmarks/results/ and put its table in docs/benchmarks.md.
Planned time on an H100 (not yet run): building and loading SD (1.07B parameters) and ViT-H/14 (632M) ~1-1.5 min;
48 bf16 cases x 4 calls at ~0.1-0.3 s, ~1 min; compiling the UNet ~1 min.

``tests/test_gpu_script.py`` runs this script on the CPU with tiny stand-ins (``main(argv, extractors=...)``).

``--modern`` (issue 20, item 6): instead of SD 1.5, the modern presets' priors at full size with random weights -- SDXL
base 1.0, SD 3.5 medium, FLUX.1-dev (11.9B), the real architectures' configs below (:data:`MODERN`), each prior built by
its own class on a tiny folder (the real scheduler config, prompt embeddings of the real shapes: no text encoder) and
its denoiser and VAE then replaced by full-size ones initialised on the GPU (:func:`modern_prior`) -- each with its
preset's extractor (configs/modern/*.yaml: torchvision ResNet-50, timm DINOv2 ViT-B/14 at 518 px, open_clip ViT-L/14;
random weights, the preset's preprocessing and precision) at its preset's number of steps: the cases that
benchmarks/scale.py estimates without a GPU (benchmarks/results/scale.md), measured: ``--resolutions 512,1024`` x
guidance (``unet_gradient``, ``clean_estimate``: no denoiser backward) x checkpointing of denoiser and VAE off/on x
``--batches 1,4``, the denoiser's weights held in float32 as the priors hold them (``--held fp32,bf16`` adds them cast
to bf16); -> gpu-modern.md / gpu-modern.jsonl, "fits": the smallest of 24/48/80/141 GB (N x 1e9 bytes) the device use
fits. FLUX at 1024 px, batch 4, without checkpointing needs ~240 GiB by the estimate: out of memory, caught. One device
call (after the wheels above are installed as there)::

    python3 benchmarks/gpu.py --modern --time-limit 420 2>&1 | tee $OUT/gpu-modern.log

Planned time on an H200 (not yet run): the three priors' random init on the GPU and the extractors' on the CPU under a
minute; the 48 float32-held cases x 4 calls are ~21,000 TFLOP by benchmarks/scale.py's counts (FLUX 60%), ~1-2 min at
150-300 TFLOPS, plus first-call set-up and out-of-memory recoveries; ``--held fp32,bf16`` about doubles it (a second
call with ``--held bf16`` if the first runs out of time). ``tests/benchmarks/test_scale_script.py`` runs ``--modern
--tiny`` on the CPU (``main(argv, modern_extractors=...)``).

The few-step presets (issue 36: SDXL-Turbo with open_clip ViT-L/14 at 512 px, SD 3.5 Large Turbo with open_clip SigLIP
So400m/14 at 384, FLUX.1-schnell with DINOv2 ViT-B/14; ``model.sampler: NoiseOptimization``) are families of
``--modern`` too (``--families sdxl_turbo,sd35_large_turbo,flux_schnell``; the denoisers' configs in :data:`MODERN`,
SD 3.5 Large's checked against its published size in tests/test_gpu_script.py). Their cases are
``noise_optimization`` (the only variant they run): ``NoiseOptimization.generate`` as the preset configures it, timed
with 0 and with 1 Adam step (their difference: one Adam step through the whole sampler, decoder and extractor with its
backward); ms per image = the preset's Adam steps x that + the last pass, per generation; ``--checkpointing`` also
takes ``prior`` there (the prior's gradient checkpointing without the sampler's around each denoiser call). A GPU
call for them alone::

    python3 benchmarks/gpu.py --modern --families sdxl_turbo,sd35_large_turbo,flux_schnell --held bf16 \
      --checkpointing on,prior --warmup 0 --iters 1 --time-limit 420 2>&1 | tee $OUT/gpu-modern-turbo.log

Planned time on an H100 (not yet run): an Adam step is 13 TFLOP per generation (SDXL-Turbo, 512 px, checkpointing on)
to 1,309 TFLOP (FLUX.1-schnell, 1024 px) by benchmarks/results/scale.md; the 24 cases of that call (each ``generate``
with 1 and with 0 Adam steps, batch 1 and 4) are ~34 PFLOP, FLUX.1-schnell 68% of it: ~2-3 min at 200-300 TFLOPS,
plus building the three priors (8B and 12B parameters initialised on the GPU) and first calls.
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
from contextlib import contextmanager, nullcontext
from functools import partial
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


# ---- the modern presets' priors (configs/modern/*.yaml) at full size, for --modern and benchmarks/scale.py ----------
# No hub access and no weights: the real architectures are written here from the released models' configs (values
# checked against diffusers 0.42's own sources where they say them: SDXL's UNet as diffusers' single-file loader derives
# it from sd_xl_base.yaml, FluxTransformer2DModel's defaults, SD 3.5 medium's pos_embed of 384^2 positions in that
# loader, the VAE scaling factors of diffusers.utils.remote_utils). The prior itself is built by its own constructor on
# a tiny folder with the same VAE factor (8x), patch size and embedding widths (so its resolution, time ids and prompt
# buffers are the ones the full model gets), then its denoiser and VAE are replaced by full-size ones: what
# LatentDiffusionPrior.__init__ loads, so the prior's own denoise/decode code is what runs.
SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, 2.57B parameters
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True, norm_num_groups=32,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
SD35_MEDIUM = dict(  # stabilityai/stable-diffusion-3.5-medium transformer/config.json (MMDiT-X): 2.24B parameters and
    # a 226M-entry position-embedding buffer (384^2 x 1536), 2.47B in all
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
FLUX_DEV = dict(  # black-forest-labs/FLUX.1-dev transformer/config.json, 11.9B parameters
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
# The few-step presets' denoisers (issue 36). SDXL-Turbo's UNet is SDXL base's architecture (SDXL_UNET).
SD35_LARGE = dict(  # stabilityai/stable-diffusion-3.5-large transformer/config.json, "SD3.5 Large Public Release"
    # (as mirrored on the hub; SD 3.5 Large Turbo is the same architecture distilled: its transformer's safetensors
    # index totals 16.29 GB in bf16): MMDiT, 38 blocks of 38 heads x 64 = 2432 wide, QK RMS norm, no dual-attention
    # blocks; 8.06B parameters and a 90M-entry position-embedding buffer (192^2 x 2432)
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38, attention_head_dim=64,
    num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432, pooled_projection_dim=2048,
    pos_embed_max_size=192, qk_norm="rms_norm")
FLUX_SCHNELL = dict(FLUX_DEV, guidance_embeds=False)  # black-forest-labs/FLUX.1-schnell: dev's without guidance input
KL_VAE = dict(in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
              norm_num_groups=32, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              sample_size=1024, force_upcast=True)  # 8x; 83.7M parameters (16 latent channels: 83.8M)
NO_QUANT_CONV = dict(use_quant_conv=False, use_post_quant_conv=False)
# Tiny stand-ins with the same VAE factor, patch size and embedding widths: the folders the priors are built from,
# and the "full" models of --tiny (the CPU tests of the scripts).
TINY_VAE = dict(KL_VAE, layers_per_block=1, block_out_channels=(8, 8, 8, 8), norm_num_groups=4, sample_size=64)
TINY = {
    "sdxl": dict(SDXL_UNET, sample_size=8, layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=8,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 1),
                 attention_head_dim=(2, 4)),
    "sd3": dict(SD35_MEDIUM, sample_size=8, num_layers=2, attention_head_dim=8, num_attention_heads=2,
                caption_projection_dim=16, pos_embed_max_size=64, dual_attention_layers=(0,)),
    "flux": dict(FLUX_DEV, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                 axes_dims_rope=(4, 6, 6)),
}
TINY |= {"sdxl_turbo": TINY["sdxl"],
         "sd35_large_turbo": dict(SD35_LARGE, sample_size=8, num_layers=2, attention_head_dim=8, num_attention_heads=2,
                                  caption_projection_dim=16, pos_embed_max_size=64),
         "flux_schnell": dict(TINY["flux"], guidance_embeds=False)}
# The models' own scheduler configs (as tests/tiny_pipelines.py quotes them, with where they come from).
SDXL_SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
                  "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
                  "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
                  "trained_betas": None, "use_karras_sigmas": False}
SD3_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
FLUX_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
                  "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
                  "use_dynamic_shifting": True}
# The few-step models' scheduler configs as their repositories publish them (tests/tiny_pipelines.py quotes the same,
# with the sources): SDXL-Turbo's Euler ancestral with trailing spacing (1 step: t = 999), FLUX.1-schnell's without
# dynamic shifting (shift 1), SD 3.5 Large Turbo's SD3 config (shift 3).
SDXL_TURBO_SCHEDULER = SDXL_SCHEDULER | {"_class_name": "EulerAncestralDiscreteScheduler",
                                         "timestep_spacing": "trailing"}
FLUX_SCHNELL_SCHEDULER = FLUX_SCHEDULER | {"shift": 1.0, "use_dynamic_shifting": False}
SD35_TURBO_SCHEDULER = SD3_SCHEDULER
# family: the prior class (a public name), its preset, pipeline, denoiser (folder, class, config), VAE, scheduler and
# the prompt embeddings' real shapes after the batch of 1 (SDXL: 77 CLIP tokens of 768 + 1280, pooled 1280, and its
# time ids; SD3: 77 CLIP + 256 T5 tokens of 4096, pooled 768 + 1280; FLUX: 512 T5 tokens, pooled CLIP 768)
MODERN = {
    "sdxl": {"name": "SDXL base 1.0", "prior": "StableDiffusionXLPrior", "preset": "modern/sdxl_resnet50",
             "pipeline": "StableDiffusionXLPipeline", "subfolder": "unet", "denoiser": "UNet2DConditionModel",
             "config": SDXL_UNET, "vae": dict(latent_channels=4, scaling_factor=0.13025), "scheduler": SDXL_SCHEDULER,
             "embeds": {"prompt_embeds": (77, 2048), "pooled_prompt_embeds": (1280,)}},
    "sd3": {"name": "SD 3.5 medium", "prior": "StableDiffusion3Prior", "preset": "modern/sd35_medium_dinov2",
            "pipeline": "StableDiffusion3Pipeline", "subfolder": "transformer", "denoiser": "SD3Transformer2DModel",
            "config": SD35_MEDIUM, "vae": dict(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
                                               **NO_QUANT_CONV),
            "scheduler": SD3_SCHEDULER, "embeds": {"prompt_embeds": (333, 4096), "pooled_prompt_embeds": (2048,)}},
    "flux": {"name": "FLUX.1-dev", "prior": "FluxPrior", "preset": "modern/flux_dev_clip", "pipeline": "FluxPipeline",
             "subfolder": "transformer", "denoiser": "FluxTransformer2DModel", "config": FLUX_DEV,
             "vae": dict(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, **NO_QUANT_CONV),
             "scheduler": FLUX_SCHEDULER, "embeds": {"prompt_embeds": (512, 4096), "pooled_prompt_embeds": (768,)}},
    # the few-step presets with noise optimisation (model.sampler: lit_featinv.NoiseOptimization; issue 36)
    "sdxl_turbo": {"name": "SDXL-Turbo", "prior": "StableDiffusionXLPrior", "preset": "modern/sdxl_turbo_clip",
                   "pipeline": "StableDiffusionXLPipeline", "subfolder": "unet", "denoiser": "UNet2DConditionModel",
                   "config": SDXL_UNET, "vae": dict(latent_channels=4, scaling_factor=0.13025),
                   "scheduler": SDXL_TURBO_SCHEDULER,
                   "embeds": {"prompt_embeds": (77, 2048), "pooled_prompt_embeds": (1280,)}},
    "sd35_large_turbo": {"name": "SD 3.5 Large Turbo", "prior": "StableDiffusion3Prior",
                         "preset": "modern/sd35_large_turbo_siglip", "pipeline": "StableDiffusion3Pipeline",
                         "subfolder": "transformer", "denoiser": "SD3Transformer2DModel", "config": SD35_LARGE,
                         "vae": dict(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, **NO_QUANT_CONV),
                         "scheduler": SD35_TURBO_SCHEDULER,
                         "embeds": {"prompt_embeds": (333, 4096), "pooled_prompt_embeds": (2048,)}},
    "flux_schnell": {"name": "FLUX.1-schnell", "prior": "FluxPrior", "preset": "modern/flux_schnell_dinov2",
                     "pipeline": "FluxPipeline", "subfolder": "transformer", "denoiser": "FluxTransformer2DModel",
                     "config": FLUX_SCHNELL, "vae": dict(latent_channels=16, scaling_factor=0.3611,
                                                         shift_factor=0.1159, **NO_QUANT_CONV),
                     "scheduler": FLUX_SCHNELL_SCHEDULER,
                     "embeds": {"prompt_embeds": (256, 4096), "pooled_prompt_embeds": (768,)}},  # 256 T5 tokens
}
MODERN_VARIANTS = ("unet_gradient", "clean_estimate")  # the denoiser's gradient, and the one with no denoiser backward
# the few-step presets' sampler: Adam on the noise through the whole sampler, its gradient through the VAE or through
# a tiny decoder (AutoencoderTiny's architecture as TAESDXL / TAESD3 / TAEF1, random weights; the VAE still scores)
NOISE_VARIANTS = ("noise_optimization", "noise_optimization+tiny_decoder")
ALL_VARIANTS = MODERN_VARIANTS + NOISE_VARIANTS


def family_variants(family: str, variants) -> list[str]:
    """Those of ``variants`` that the family's preset can run: noise optimisation for a preset that generates with
    ``model.sampler: NoiseOptimization``, the guidance variants for the others."""
    own = NOISE_VARIANTS if modern_settings(family)["sampler"] == "NoiseOptimization" else MODERN_VARIANTS
    return [v for v in variants if v in own]


def modern_module(family: str, prior, extractor, variant: str, checkpointing: bool = True) -> FeatureInversion:
    """The module a case runs: the preset's steps with the guidance ``variant`` (w = 4; the cost does not depend on
    it), or its ``NoiseOptimization`` with the preset's arguments (``checkpointing`` as the case's)."""
    from lit_featinv import NoiseOptimization
    settings = modern_settings(family)
    if variant in NOISE_VARIANTS:
        sampler = NoiseOptimization(**(settings["sampler_args"] | {"checkpointing": checkpointing, "decoder": None}))
        if variant.endswith("+tiny_decoder"):
            sampler.decoder = modern_tiny_decoder(family)
        return FeatureInversion(prior, extractor, sampler=sampler, num_inference_steps=settings["steps"],
                                progress=False)
    return FeatureInversion(prior, extractor, guidance=VARIANTS[variant](None), num_inference_steps=settings["steps"],
                            progress=False)


def modern_tiny_decoder(family: str):
    """The family's tiny decoder (TAESDXL, TAESD3, TAEF1: diffusers ``AutoencoderTiny``'s defaults with the VAE's
    latent channels), random weights, frozen."""
    from diffusers import AutoencoderTiny
    return AutoencoderTiny(latent_channels=MODERN[family]["vae"]["latent_channels"]).requires_grad_(False).eval()


def noise_variant(family: str) -> str:
    """The noise-optimisation variant of the family's preset: with its tiny decoder in the gradient or not."""
    return NOISE_VARIANTS[1] if modern_settings(family)["sampler_args"].get("decoder") else NOISE_VARIANTS[0]


def preset_model(preset: str) -> dict:
    """``model.init_args`` of ``configs/<preset>.yaml``."""
    import yaml
    return yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text())["model"]["init_args"]


def modern_settings(family: str) -> dict:
    """What the family's preset runs: steps, batch (samples per target x targets per batch), resolution (null: the
    model's default, 1024 px for all six), checkpointing, guidance class (None without one), sampler class (None: the
    guided loop) and its arguments, the denoiser's weights as held (fp32 or bf16)."""
    import yaml
    config = yaml.safe_load((ROOT / "configs" / f"{MODERN[family]['preset']}.yaml").read_text())
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    prior, sampler = model["prior"]["init_args"], model.get("sampler") or {}
    return {"steps": model["num_inference_steps"], "resolution": prior.get("resolution") or 1024,
            "batch": model.get("samples_per_target", 1) * data.get("batch_size", 1),
            "checkpointing": bool(prior.get("gradient_checkpointing")),
            "guidance": model["guidance"]["class_path"].rsplit(".", 1)[1] if model.get("guidance") else None,
            "sampler": sampler["class_path"].rsplit(".", 1)[1] if sampler else None,
            "sampler_args": dict(sampler.get("init_args") or {}),
            "held": "bf16" if prior.get("weights_dtype") in ("bfloat16", "bf16") else "fp32",
            "extractor": model["extractor"]["init_args"]["model_name"]}


def modern_extractor(family: str, **overrides):
    """The family preset's extractor with random weights and the preset's preprocessing and precision (its class and
    arguments; torchvision ``weights`` None, timm ``pretrained`` false, open_clip ``pretrained`` None); ``overrides``
    replace arguments (``preprocess``: merged into the preset's)."""
    import lit_featinv
    spec = preset_model(MODERN[family]["preset"])["extractor"]
    args = dict(spec["init_args"])
    if "weights" in args:
        args["weights"] = None
    if "pretrained" in args:
        args["pretrained"] = False if isinstance(args["pretrained"], bool) else None
    preprocess = (args.get("preprocess") or {}) | overrides.pop("preprocess", {})
    args |= overrides | {"preprocess": preprocess}
    return getattr(lit_featinv, spec["class_path"].rsplit(".", 1)[1])(**args)


def save_modern_folder(family: str, folder: Path) -> Path:
    """The family's prior folder with tiny random models (``model_index.json``, the denoiser's folder, ``vae/``, the
    real ``scheduler/`` config) and ``prompt_embeds.pt``: embeddings of the real shapes (random values), so that no
    text encoder is loaded."""
    import diffusers
    from lit_featinv.models import save_prompt_embeds
    spec = MODERN[family]
    folder.mkdir(parents=True)
    index = {"_class_name": spec["pipeline"], "_diffusers_version": diffusers.__version__,
             spec["subfolder"]: ["diffusers", spec["denoiser"]], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", spec["scheduler"]["_class_name"]]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(spec["scheduler"], indent=2))
    denoiser, vae = modern_models(family, "tiny")
    denoiser.save_pretrained(folder / spec["subfolder"])
    vae.save_pretrained(folder / "vae")
    generator = torch.Generator().manual_seed(0)
    embeds = {name: torch.randn(1, *shape, generator=generator) for name, shape in spec["embeds"].items()}
    save_prompt_embeds(folder / "prompt_embeds.pt", embeds, spec["prior"], str(folder), "")
    return folder


def modern_models(family: str, scale: str = "full", device: str | torch.device | None = None):
    """(denoiser, VAE) of the family with random weights, in float32, built on ``device`` (inside a FakeTensorMode:
    fake parameters, no memory); ``scale`` tiny: the stand-ins."""
    import diffusers
    spec = MODERN[family]
    torch.manual_seed(0)
    with torch.device(device) if device is not None else nullcontext():
        denoiser = getattr(diffusers, spec["denoiser"])(**(spec["config"] if scale == "full" else TINY[family]))
        vae = diffusers.AutoencoderKL(**(KL_VAE if scale == "full" else TINY_VAE), **spec["vae"])
    return denoiser.requires_grad_(False).eval(), vae.requires_grad_(False).eval()


def modern_prior(family: str, folder: Path, resolution: int, denoiser, vae):
    """The family's prior from ``folder`` (:func:`save_modern_folder`) at ``resolution`` px, with the preset's
    scheduler class on the folder's (the model's own) config and the prompt embeddings file, its denoiser and VAE then
    replaced by ``denoiser`` and ``vae``."""
    import lit_featinv
    spec = MODERN[family]
    own = {k: v for k, v in preset_model(spec["preset"])["prior"]["init_args"].items()
           if k in ("scheduler", "scheduler_config") and v is not None}  # SDXL-Turbo: Euler ancestral
    prior = getattr(lit_featinv, spec["prior"])(str(folder), prompt_embeds=str(folder / "prompt_embeds.pt"),
                                                resolution=resolution, **own)
    latent = prior.latent_size
    prior.unet, prior.vae = denoiser, vae  # what LatentDiffusionPrior.__init__ loaded from the folder
    prior.requires_grad_(False).eval()
    fits = lambda value, want: len(value.shape) == len(want) + 1 and all(  # noqa: E731
        w in (-1, g) for w, g in zip(want, value.shape[1:]))
    if prior.check_resolution(resolution) != latent or not all(
            fits(getattr(prior, name), want) for name, want in prior.embed_dims().items()):
        raise RuntimeError(f"{family}: the full-size models do not fit the prior built on the tiny folder")
    return prior


def hold(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Floating parameters and buffers to ``dtype`` (as ``model.to(dtype)``; also for fake tensors, which
    ``Module.to`` cannot swap)."""
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for name, value in store.items():
                if value is not None and value.is_floating_point() and value.dtype != dtype:
                    cast = value.detach().to(dtype)
                    store[name] = torch.nn.Parameter(cast, requires_grad=False) if store is module._parameters \
                        else cast
    return model


def resident_bytes(module: torch.nn.Module) -> int:
    """Bytes of its parameters and buffers (each once)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


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
    steps = module.num_inference_steps  # and the prior's schedule (FLUX: its shift mu and sigmas)
    scheduler.set_timesteps(steps, device=device, **module.prior.schedule_kwargs(steps))
    i = len(scheduler.timesteps) // 2
    t, abar = scheduler.timesteps[i], alpha_bar(scheduler, i).to(device)
    generator = torch.Generator().manual_seed(0)
    sample = (torch.randn(batch, *module.prior.sample_shape, generator=generator)
              * getattr(scheduler, "init_noise_sigma", 1.0)).to(device)
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


def run_noise_case(module: FeatureInversion, batch: int, dtype: str, device: torch.device, warmup: int,
                   iters: int) -> dict:
    """Noise optimisation as its preset runs it (``FeatureInversion.generate`` -> ``NoiseOptimization.generate``, one
    generation per row of the batch),
    timed in two parts: ``generate`` with no Adam step (the last pass alone: the whole sampler, the decode, the
    extractor, the scoring of its image) and with one (a pass with its backward and the Adam step, then the last
    pass); the difference of their medians is one Adam step, and an image costs ``optimization_steps`` Adam steps + the
    last pass (``ms_image``, per generation: the batch's time / batch). Peaks over the timed one-step calls."""
    sampler, module = module.sampler, module.to(device)  # generate draws its noise on module.device
    steps = sampler.optimization_steps
    generator = torch.Generator().manual_seed(0)
    cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    with torch.no_grad(), cast:
        dim = module.extractor(torch.rand(1, 3, 64, 64, generator=generator).to(device)).shape[1]
    target, seeds = torch.randn(batch, dim, generator=generator).to(device), list(range(batch))
    out, times, nonfinite, cuda = None, {}, 0, device.type == "cuda"

    def call():
        nonlocal out, nonfinite
        with warnings.catch_warnings(record=True) as caught, torch.no_grad(), cast:
            warnings.simplefilter("always")
            out = module.generate(target, seeds)  # the sampler's generate, as predict runs it
        nonfinite += sum("NaN or Inf" in str(w.message) for w in caught)

    try:
        for k in (0, 1):
            sampler.optimization_steps = k
            for _ in range(warmup):
                call()
            sync(device)
            if cuda and k == 1:
                out = None
                resident = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            times[k] = []
            for _ in range(iters):
                sync(device)
                start = time.perf_counter()
                call()
                sync(device)
                times[k].append(time.perf_counter() - start)
    finally:
        sampler.optimization_steps = steps
    last, both = statistics.median(times[0]), statistics.median(times[1])
    row = {"ms": round(1000 * (both - last), 2), "ms_last": round(1000 * last, 2),
           "ms_image": round(1000 * (steps * (both - last) + last) / batch, 1), "optimization_steps": steps,
           "times_ms": [round(1000 * x, 2) for x in times[1]], "times_last_ms": [round(1000 * x, 2) for x in times[0]],
           "finite": bool(torch.isfinite(out["image"]).all()) and nonfinite == 0}
    if cuda:
        free_bytes, total = torch.cuda.mem_get_info(device)
        row |= {"resident_gib": resident / GiB, "peak_alloc_gib": torch.cuda.max_memory_allocated(device) / GiB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GiB,
                "device_used_gib": (total - free_bytes) / GiB}
    return row


def attempt(row: dict, build, batch: int, dtype: str, device: torch.device, args, began: float) -> bool:
    """One case into ``row``: its measurements, or ``error`` where it was skipped (``--time-limit``), ran out of
    memory (``oom``) or failed. ``build()`` makes the module once the device is freed. True when it ran."""
    if args.time_limit and time.perf_counter() - began > args.time_limit:
        row["error"] = f"skipped: --time-limit {args.time_limit:g} s"
        return False
    free(device)
    module, error = build(), None
    run = run_noise_case if getattr(module.sampler, "generates", False) else run_case
    try:
        row |= run(module, batch, dtype, device, args.warmup, args.iters)
    except torch.OutOfMemoryError as err:
        error, row["oom"] = f"out of memory: {str(err).splitlines()[0][:120]}", True
    except RuntimeError as err:
        error = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    del module
    if error:  # outside the except block: the traceback's frames (and tensors) are gone
        row["error"] = error
        free(device)
    return error is None


def record(row: dict, rows: list[dict], jsonl_path: Path, md_path: Path, render) -> None:
    """A finished case: printed, appended to the JSON lines and the table (``render(rows)``) rewritten."""
    rows.append(row)
    print("[gpu] " + json.dumps(row), flush=True)
    with jsonl_path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    md_path.write_text(render(rows))


def gib(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "n/a"


def measured(r: dict, fits: str) -> str:
    """A row's measured cells (ms / iteration and image, GiB peaks, whether it fits under key ``fits``, a note), or
    dashes and its error where the case failed (out of memory: does not fit)."""
    if "ms" not in r:
        return f"- | - | - | - | - | {'no' if r.get('oom') else '-'} | {r['error']}"
    note = "" if r["finite"] else "non-finite output/gradient"
    return (f"{r['ms']:.1f} | {r['ms'] / r['batch']:.1f} | {gib(r, 'peak_alloc_gib')} | {gib(r, 'peak_reserved_gib')} | "
            f"{gib(r, 'device_used_gib')} | {r.get(fits, 'n/a')} | {note}")


def table(header: list[str], rows: list[dict]) -> str:
    lines = header + ["", "| guidance | extractor | precision | batch | grad ckpt | options | ms / iteration | "
                          "ms / image | peak alloc GiB | peak reserved GiB | device used GiB | fits 24 GB | note |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        head = f"| {r['variant']} | {r['extractor']} | {r['precision']} | {r['batch']} | {r['ckpt']} | {r['options']} |"
        lines.append(f"{head} {measured(r, 'fits_24gb')} |")
    return "\n".join(lines) + "\n"


CARDS_GB = (24, 48, 80, 141)  # RTX 4090 / A10 / L4, L40S / A6000, A100 / H100, H200


def card_fit(row: dict) -> str:
    """The smallest card (N x 1e9 bytes) the measured device use fits; "tight": only peak allocation + context."""
    context = row["device_used_gib"] - row["peak_reserved_gib"]
    for card in CARDS_GB:
        if row["device_used_gib"] <= card * 1e9 / GiB:
            return f"{card} GB"
    for card in CARDS_GB:
        if row["peak_alloc_gib"] + context <= card * 1e9 / GiB:
            return f"{card} GB, tight"
    return "none"


def modern_table(header: list[str], rows: list[dict]) -> str:
    """The guided cases' table, then the noise-optimisation cases' (one Adam step, the last pass, a whole image)."""
    noise = [r for r in rows if r["variant"] in NOISE_VARIANTS]
    guided = [r for r in rows if r["variant"] not in NOISE_VARIANTS]
    lines = header + (["", "| prior | px | weights held | guidance | precision | batch | grad ckpt | ms / iteration | "
                           "ms / image | peak alloc GiB | peak reserved GiB | device used GiB | fits | note |",
                       "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
                      if guided or not noise else [])
    for r in guided:
        head = (f"| {r['prior']} | {r['resolution']} | {r['held']} | {r['variant']} | {r['precision']} | "
                f"{r['batch']} | {r['ckpt']} |")
        lines.append(f"{head} {measured(r, 'fits')} |")
    if noise:
        lines += ["", "Noise optimisation (the few-step presets): ms / Adam step = a pass through the whole sampler, "
                      "decoder and extractor with its backward (and the Adam step); last pass = forward only; s / "
                      "image = optimization_steps Adam steps + the last pass, per generation (the batch's time / "
                      "batch); every pass's image scored as the best-image candidate.", "",
                  "| prior | px | weights held | sampler | precision | batch | grad ckpt | ms / Adam step | ms / last "
                  "pass | s / image | peak alloc GiB | peak reserved GiB | device used GiB | fits | note |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in noise:
            head = (f"| {r['prior']} | {r['resolution']} | {r['held']} | {r['variant']} x {r['optimization_steps']} "
                    f"| {r['precision']} | {r['batch']} | {r['ckpt']} |")
            if "ms" not in r:
                lines.append(f"{head} - | - | - | - | - | - | {'no' if r.get('oom') else '-'} | {r['error']} |")
                continue
            lines.append(f"{head} {r['ms']:.1f} | {r['ms_last']:.1f} | {r['ms_image'] / 1000:.2f} | "
                         f"{gib(r, 'peak_alloc_gib')} | {gib(r, 'peak_reserved_gib')} | {gib(r, 'device_used_gib')} | "
                         f"{r.get('fits', 'n/a')} | {'' if r['finite'] else 'non-finite output/gradient'} |")
    return "\n".join(lines) + "\n"


def modern_main(args, device: torch.device, gpu: str, out_dir: Path, began: float,
                extractors: dict | None = None) -> int:
    """``--modern``: the modern presets' priors at full size (random weights), their extractors, the cases of
    benchmarks/scale.py measured for real."""
    import diffusers
    families, held = args.families.split(","), args.held.split(",")
    variants = args.variants.split(",") if args.variants else list(ALL_VARIANTS)
    resolutions, batches = [int(r) for r in args.resolutions.split(",")], [int(b) for b in args.batches.split(",")]
    dtypes, ckpts = args.dtypes.split(","), args.checkpointing.split(",")
    if set(families) - set(MODERN) or set(variants) - set(ALL_VARIANTS) or set(held) - {"fp32", "bf16"} or \
            set(dtypes) - {"bf16", "fp32"} or set(ckpts) - {"off", "on", "prior"}:
        raise SystemExit(f"--families from {','.join(MODERN)}; --variants from {','.join(ALL_VARIANTS)}; --held "
                         f"and --dtypes from fp32,bf16; --checkpointing from off,on,prior")
    scale = "tiny" if args.tiny else "full"
    md_path, jsonl_path = out_dir / "gpu-modern.md", out_dir / "gpu-modern.jsonl"
    jsonl_path.write_text("")
    header = [
        "# Seconds per guided iteration and peak memory of the modern presets' priors (" +
        ("TINY stand-ins: a test of the script" if args.tiny else "SDXL base 1.0, SD 3.5 medium, FLUX.1-dev; random "
                                                                  "weights of the real architectures") + ")", "",
        f"- command: `python benchmarks/gpu.py {' '.join(sys.argv[1:] if args.argv is None else args.argv)}`",
        f"- device: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers {diffusers.__version__}, "
        f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}",
        "- per case: as benchmarks/scale.py estimates it (benchmarks/results/scale.md): guided_output + scoring the "
        "candidate at the middle step of the preset's schedule, w = 4; noise optimisation (the few-step presets): "
        "NoiseOptimization.generate with 1 and with 0 Adam steps (the preset's lr, norm weight, checkpointing as the "
        f"case's); {args.warmup} warm-up + {args.iters} timed "
        "calls, median; peaks over the timed ones, weights included; device used = total - free after them; "
        "weights held: the denoiser's (fp32 as the priors hold them; bf16 cast); fits: the smallest card (N x 1e9 "
        "bytes) >= device used, tight = only peak alloc + context",
    ]
    rows = []
    tmp = tempfile.mkdtemp(prefix="gpu_modern_", dir=scratch_dir(10**8))
    try:
        for family in families:
            spec, settings = MODERN[family], modern_settings(family)
            start = time.perf_counter()
            folder = save_modern_folder(family, Path(tmp) / family)
            denoiser, vae = modern_models(family, scale, device)  # random weights, initialised on the device
            description, build = extractors[family] if extractors else (settings["extractor"],
                                                                        partial(modern_extractor, family))
            extractor = build().to(device)
            how = f"{settings['steps']} step{'s' if settings['steps'] > 1 else ''}"
            if settings["sampler"]:
                how += f", noise optimisation x {settings['sampler_args']['optimization_steps']} Adam steps"
            header.append(f"- {spec['name']} ({spec['preset']}, {how}): {spec['denoiser']} "
                          f"{millions(denoiser):,.1f}M + VAE {millions(vae):.1f}M parameters; extractor {description}, "
                          f"{millions(extractor.network):.1f}M, input {extractor.preprocess.size}, autocast "
                          f"{extractor.autocast}")
            print(f"[gpu] built {family} in {time.perf_counter() - start:.0f} s", flush=True)
            for dtype in held:
                hold(denoiser, torch.float32 if dtype == "fp32" else torch.bfloat16)
                for resolution in resolutions:
                    prior = modern_prior(family, folder, resolution, denoiser, vae).to(device)
                    for variant in family_variants(family, variants):
                        for ckpt in ckpts:
                            if ckpt == "prior" and variant not in NOISE_VARIANTS:  # the same as on there
                                continue
                            set_checkpointing(prior, ckpt != "off")
                            for precision in dtypes:
                                for batch in batches:
                                    row = {"family": family, "prior": spec["name"], "resolution": resolution,
                                           "held": dtype, "variant": variant, "batch": batch, "ckpt": ckpt,
                                           "precision": "bf16 autocast" if precision == "bf16" else "float32"}
                                    if variant in NOISE_VARIANTS:
                                        row["optimization_steps"] = settings["sampler_args"]["optimization_steps"]
                                    build = partial(modern_module, family, prior, extractor, variant, ckpt == "on")
                                    if attempt(row, build, batch, precision, device, args, began) and \
                                            "device_used_gib" in row:
                                        row["fits"] = card_fit(row)
                                    record(row, rows, jsonl_path, md_path, partial(modern_table, header))
                    del prior
            del denoiser, vae, extractor
            free(device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = modern_table(header, rows)
    md_path.write_text(text)
    print(text)
    print(f"[gpu] wrote {md_path} and {jsonl_path} in {time.perf_counter() - began:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None, extractors: dict | None = None, modern_extractors: dict | None = None) -> int:
    """``extractors``: {name: (description, builder)} instead of :data:`EXTRACTORS`; ``modern_extractors``: {family:
    (description, builder)} instead of each modern preset's own (the CPU tests' tiny ones)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtypes", default="bf16", help="comma list of bf16 (autocast) and fp32")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--variants", default=None, help=f"default: {','.join(VARIANTS)}; --modern: "
                                                         f"{','.join(ALL_VARIANTS)} (each family those its preset runs)")
    parser.add_argument("--extractors", default="clip_rn50,resnet50,vit_h14_518_bf16")
    parser.add_argument("--checkpointing", default="off,on", help="gradient checkpointing of UNet + VAE: off,on; "
                                                                  "--modern also prior: noise optimisation with the "
                                                                  "prior's only (on: also the sampler's)")
    parser.add_argument("--throughput", default="channels_last,compile",
                        help="options measured on the first variant and the resnet50 (else first) extractor")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compile case")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=0, help="start no case after this many seconds (0: none)")
    parser.add_argument("--out", default=None, help="folder for gpu.md / gpu.jsonl (default $OUT or runs/)")
    parser.add_argument("--sd", default=None, help="an SD folder to use (default: SD 1.5's shapes, built here)")
    parser.add_argument("--tiny-decoder", default=None, help="an AutoencoderTiny folder (default: TAESD's, built here)")
    parser.add_argument("--modern", action="store_true", help="the modern presets' priors (SDXL, SD 3.5 medium, "
                                                              "FLUX.1-dev) instead of SD 1.5: gpu-modern.md")
    parser.add_argument("--families", default=",".join(MODERN), help="--modern: which priors")
    parser.add_argument("--resolutions", default="512,1024", help="--modern: image sizes, px")
    parser.add_argument("--held", default="fp32", help="--modern: the denoiser's weights held in fp32 (as the priors "
                                                       "hold them), bf16, or both")
    parser.add_argument("--tiny", action="store_true", help="--modern: tiny stand-ins of the models (a CPU test)")
    args = parser.parse_args(argv)
    args.argv = argv
    began = time.perf_counter()
    builders = extractors or EXTRACTORS
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes, batches = args.dtypes.split(","), [int(b) for b in args.batches.split(",")]
    ckpts = [{"off": False, "on": True}.get(c) for c in args.checkpointing.split(",")]
    names, variants = args.extractors.split(","), (args.variants or ",".join(VARIANTS)).split(",")
    options = [o for o in args.throughput.split(",") if o]
    if not args.modern and (set(dtypes) - {"bf16", "fp32"} or set(names) - set(builders) or None in ckpts or
                            set(variants) - set(VARIANTS) or set(options) - {"channels_last", "compile"}):
        parser.error(f"--dtypes from bf16,fp32; --extractors from {','.join(builders)}; --variants from "
                     f"{','.join(VARIANTS)}; --checkpointing from off,on; --throughput from channels_last,compile")
    out_dir = Path(args.out or os.environ.get("OUT") or ROOT / "runs")
    out_dir.mkdir(parents=True, exist_ok=True)

    import diffusers
    gpu = (f"{torch.cuda.get_device_name(device)}, {torch.cuda.get_device_properties(device).total_memory / GiB:.1f} GiB"
           if device.type == "cuda" else f"none (CPU {platform.machine()}: a test of the script, memory n/a)")
    print(f"[gpu] device {device}: {gpu}", flush=True)
    if args.modern:
        return modern_main(args, device, gpu, out_dir, began, modern_extractors)
    md_path, jsonl_path = out_dir / "gpu.md", out_dir / "gpu.jsonl"
    jsonl_path.write_text("")
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
        build = partial(FeatureInversion, prior, built[name], guidance=guidance[variant], num_inference_steps=1000,
                        progress=False)
        attempt(row, build, batch, dtype, device, args, began)
        record(row, rows, jsonl_path, md_path, partial(table, header))

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
