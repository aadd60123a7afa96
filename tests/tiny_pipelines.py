"""Tiny random SDXL, SD 3.x and FLUX.1 pipeline folders, laid out as the hub serves them (``model_index.json`` and
one subfolder per component, written by the diffusers pipeline's ``save_pretrained``) with the real models' scheduler
configs copied verbatim; built offline: CLIP tokenizers from the small vocabulary of tests/conftest.py, the T5
tokenizer a ``tokenizers`` Unigram model. Images are 16x16 (VAE 2x, 8x8 latents); the widths differ between the text
encoders so that a swapped or mis-concatenated embedding fails."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from conftest import TINY_VOCAB

# scheduler/scheduler_config.json of stabilityai/stable-diffusion-xl-base-1.0, as quoted verbatim (same keys, same
# values) by several public repositories found through the code index (e.g. SDXL tutorials and a test's
# SDXL_SCHEDULER_CONFIG "verbatim, as single-file loaders resolve it"): EulerDiscreteScheduler, steps_offset 1, leading.
SDXL_SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
                  "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
                  "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
                  "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}
# stabilityai/stable-diffusion-3-medium-diffusers and stabilityai/stable-diffusion-3.5-medium: these four keys (as
# ostris/ai-toolkit and others load SD3's scheduler); PaddleNLP's mirror of both repositories lists
# scheduler/scheduler_config.json at 138 bytes, the size of this file, not of one with dynamic-shifting keys.
SD3_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0.dev0",
                 "num_train_timesteps": 1000, "shift": 3.0}
# black-forest-labs/FLUX.1-dev: ostris/ai-toolkit, toolkit/sampler.py (flux_config), the same as taproot's FluxScheduler
# default config (pypi taproot 0.3.8).
FLUX_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.30.0.dev0",
                  "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                  "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}

# The few-step models' scheduler/scheduler_config.json as their repositories publish them. stabilityai/sdxl-turbo:
# EulerAncestralDiscreteScheduler with trailing spacing (diffusers PR #6121 links it as the scheduler SDXL-Turbo needs,
# candle PR #1390 ports it for SDXL-Turbo's one step; the other keys are SDXL base's). black-forest-labs/FLUX.1-schnell:
# FLUX.1-dev's keys with shift 1.0 and no dynamic shifting (schnell's timesteps do not depend on the resolution).
# stabilityai/stable-diffusion-3.5-large-turbo: SD3's four keys, shift 3.0 (as SD 3.5 Large).
SDXL_TURBO_SCHEDULER = SDXL_SCHEDULER | {"_class_name": "EulerAncestralDiscreteScheduler",
                                         "_diffusers_version": "0.24.0.dev0", "timestep_spacing": "trailing"}
FLUX_SCHNELL_SCHEDULER = FLUX_SCHEDULER | {"_diffusers_version": "0.29.0.dev0", "shift": 1.0,
                                           "use_dynamic_shifting": False}
SD35_TURBO_SCHEDULER = SD3_SCHEDULER | {"_diffusers_version": "0.31.0.dev0"}

T5_PIECES = ["▁", "l", "o", "w", "e", "r", "▁low", "er", "▁new", "s", "t", "i", "d", "n", "a", "▁a"]


def clip_tokenizer(length: int = 16):
    """A CLIP tokenizer over tests/conftest.py's small vocabulary (its files only while it is built)."""
    from transformers import CLIPTokenizer
    with tempfile.TemporaryDirectory() as files:
        vocab, merges = Path(files) / "vocab.json", Path(files) / "merges.txt"
        vocab.write_text(json.dumps({token: i for i, token in enumerate(TINY_VOCAB)}))
        merges.write_text("#version: 0.2\nl o\nlo w</w>\ne r</w>\n")
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=length)


def t5_tokenizer():
    """A T5 tokenizer (SentencePiece-style Unigram over a few pieces; pad 0, eos 1, unk 2), as T5's pipelines take."""
    from transformers import T5TokenizerFast
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -float(i)) for i, p in enumerate(T5_PIECES)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def clip_encoder(hidden: int, projection: int | None = None):
    """A tiny CLIP text encoder (``projection``: with a text projection, as CLIPTextModelWithProjection)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    config = CLIPTextConfig(vocab_size=len(TINY_VOCAB), hidden_size=hidden, intermediate_size=2 * hidden,
                            num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=16, bos_token_id=21,
                            eos_token_id=22, pad_token_id=22, hidden_act="gelu", projection_dim=projection or hidden)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def t5_encoder(width: int = 48):
    from transformers import T5Config, T5EncoderModel
    return T5EncoderModel(T5Config(vocab_size=3 + len(T5_PIECES), d_model=width, d_kv=8, d_ff=64, num_layers=2,
                                   num_heads=2, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0))


def vae(latent_channels: int, scaling_factor: float, shift_factor: float | None = None, quant_conv: bool = True):
    """A 2-level AutoencoderKL: 16x16 RGB <-> 8x8 latents (the real ones have 4 levels: 8x)."""
    from diffusers import AutoencoderKL
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 16),
                         norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16, scaling_factor=scaling_factor,
                         shift_factor=shift_factor, force_upcast=True, use_quant_conv=quant_conv,
                         use_post_quant_conv=quant_conv)


def write_scheduler(folder: Path, config: dict) -> Path:
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config, indent=2))  # verbatim
    return folder


def save_sdxl(folder: Path, scheduler_config: dict = SDXL_SCHEDULER) -> Path:
    """SDXL's layout: UNet with text_time conditioning (time ids 6 x 8 + pooled 20), CLIP 16-wide + 24-wide (with
    projection 20) side by side (40), VAE 4 latent channels, SDXL's scaling factor."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=40,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=6 * 8 + 20, transformer_layers_per_block=(1, 1))
    scheduler = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)  # the folder gets scheduler_config verbatim
    StableDiffusionXLPipeline(vae=vae(4, 0.13025), text_encoder=clip_encoder(16), text_encoder_2=clip_encoder(24, 20),
                              tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=unet,
                              scheduler=scheduler).save_pretrained(folder)
    return write_scheduler(folder, scheduler_config)


def save_sd3(folder: Path, scheduler_config: dict = SD3_SCHEDULER) -> Path:
    """SD 3.5 medium's layout: MMDiT (2x2 patches, dual attention in the first block, RMS QK norm, positions up to 8x8
    patches), CLIP 16 + 24 wide (projections 16 + 20: pooled 36), T5 48 wide, VAE 16 latent channels with shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=48,
                                        caption_projection_dim=16, pooled_projection_dim=36, pos_embed_max_size=8,
                                        dual_attention_layers=(0,), qk_norm="rms_norm")
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER)
    StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler,
                             vae=vae(16, 1.5305, 0.0609, quant_conv=False), text_encoder=clip_encoder(16, 16),
                             tokenizer=clip_tokenizer(), text_encoder_2=clip_encoder(24, 20),
                             tokenizer_2=clip_tokenizer(), text_encoder_3=t5_encoder(48),
                             tokenizer_3=t5_tokenizer()).save_pretrained(folder)
    return write_scheduler(folder, scheduler_config)


def save_flux(folder: Path, guidance_embeds: bool = True, scheduler_config: dict = FLUX_SCHEDULER) -> Path:
    """FLUX.1-dev's layout: transformer on 2x2-packed 16-channel latents (64 in), guidance embedding, T5 48 wide, CLIP
    16 wide (pooled 16), VAE 16 latent channels with shift, no quant convs."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                                         pooled_projection_dim=16, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=(4, 6, 6))
    FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER),
                 vae=vae(16, 0.3611, 0.1159, quant_conv=False), text_encoder=clip_encoder(16),
                 tokenizer=clip_tokenizer(), text_encoder_2=t5_encoder(48), tokenizer_2=t5_tokenizer(),
                 transformer=transformer).save_pretrained(folder)
    return write_scheduler(folder, scheduler_config)
