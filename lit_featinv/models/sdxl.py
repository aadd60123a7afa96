"""Stable Diffusion XL as a prior: the UNet with SDXL's added text and size conditioning, two CLIP text encoders."""
from __future__ import annotations

from typing import ClassVar

import torch

from .conditioned import PromptConditionedPrior
from .text import clip_text


class StableDiffusionXLPrior(PromptConditionedPrior):
    """Stable Diffusion XL (e.g. ``stabilityai/stable-diffusion-xl-base-1.0``) conditioned on one fixed prompt (default
    empty), without classifier-free guidance: one UNet call per iteration, as ``StableDiffusionXLPipeline`` with
    ``guidance_scale`` 1.

    The UNet takes the prompt's tokens (the penultimate hidden states of both text encoders, side by side), the
    pooled output of ``text_encoder_2`` and the size conditioning ``time_ids`` = (original size, crop top-left,
    target size) = (H, W, 0, 0, H, W) at the chosen resolution. The VAE decodes in float32 when its config says
    ``force_upcast`` (SDXL base's VAE overflows in float16).

    Args:
        pretrained: hub id or local folder with ``unet/``, ``vae/``, ``text_encoder(_2)/``, ``tokenizer(_2)/``,
            ``scheduler/``.
        scheduler: diffusers scheduler class, configured from the model's own ``scheduler/`` config (SDXL base
            ships ``EulerDiscreteScheduler``, ``steps_offset`` 1, ``timestep_spacing`` leading).
        scheduler_config: overrides of that config.
        prompt: the text conditioning of every step.
        prompt_embeds: a file of this prior's prompt embeddings (``lit-featinv encode-prompt``) instead of
            ``prompt``: no text encoder is loaded.
        resolution: image size in pixels, one number (square) or [height, width], multiples of 8 (the VAE's factor);
            null: the model's default (the UNet's ``sample_size`` x 8: 1024 for SDXL base).
        gradient_checkpointing, vae_upcast, channels_last, compile, weights_dtype: as
            :class:`~lit_featinv.LatentDiffusionPrior`.
    """

    denoiser: ClassVar[tuple[str, ...]] = ("UNet2DConditionModel",)
    fields: ClassVar[dict] = {"addition_embed_type": "text_time"}  # SDXL's added text and size conditioning

    def __init__(self, pretrained: str, scheduler: str = "diffusers.EulerDiscreteScheduler",
                 scheduler_config: dict | None = None, prompt: str = "", prompt_embeds: str | None = None,
                 resolution: int | tuple[int, int] | None = None, gradient_checkpointing: bool = False,
                 vae_upcast: bool | None = None, channels_last: bool = False, compile: bool | dict = False,
                 weights_dtype: str = "float32"):
        super().__init__(pretrained, scheduler, scheduler_config, prompt, prompt_embeds, resolution,
                         gradient_checkpointing, vae_upcast, channels_last, compile, weights_dtype)
        height, width = self.resolution  # original size, crop top-left, target size
        self.register_buffer("add_time_ids", torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32),
                             persistent=False)

    @classmethod
    def encode_prompt(cls, pretrained: str, prompt: str, key: str = "model.prior.pretrained") -> dict:
        """As ``StableDiffusionXLPipeline.encode_prompt`` (no clip skip): hidden_states[-2] of ``text_encoder`` and
        ``text_encoder_2`` concatenated; the pooled ``text_embeds`` of ``text_encoder_2``."""
        first = clip_text(pretrained, prompt, "text_encoder", "tokenizer", key, projection=False)
        second = clip_text(pretrained, prompt, "text_encoder_2", "tokenizer_2", key, projection=True)
        return {"prompt_embeds": torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1).float(),
                "pooled_prompt_embeds": second.text_embeds.float()}

    def embed_dims(self) -> dict[str, tuple[int, ...]]:
        config = self.unet.config
        time_ids = 6 * config.addition_time_embed_dim  # (original size, crop top-left, target size), embedded each
        return {"prompt_embeds": (-1, config.cross_attention_dim),
                "pooled_prompt_embeds": (self.unet.add_embedding.linear_1.in_features - time_ids,)}

    def unet_kwargs(self, batch_size: int) -> dict:
        return {"encoder_hidden_states": self.batch("prompt_embeds", batch_size),
                "added_cond_kwargs": {"text_embeds": self.batch("pooled_prompt_embeds", batch_size),
                                      "time_ids": self.batch("add_time_ids", batch_size)}}
