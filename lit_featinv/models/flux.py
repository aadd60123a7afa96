"""FLUX.1 as a prior: the transformer on 2x2-packed latents with their position ids, the distilled guidance
embedding, T5 tokens and the pooled CLIP embedding, and the resolution-dependent shift of its schedule."""
from __future__ import annotations

import numpy as np
import torch
from diffusers import FluxPipeline

from .conditioned import PromptConditionedPrior
from .priors import FLOW
from .text import clip_text, t5_text


class FluxPrior(PromptConditionedPrior):
    """FLUX.1 (e.g. ``black-forest-labs/FLUX.1-dev``) conditioned on one fixed prompt (default empty): one transformer
    call per iteration, as ``FluxPipeline`` (whose FLUX.1-dev runs no classifier-free guidance either).

    The loop's sample is the unpacked latent (16 x H/8 x W/8, :attr:`sample_shape`), so noise drawn for it is
    ``FluxPipeline.prepare_latents``' before packing; :meth:`denoise` packs it into 2x2 patches with their position
    ids, calls the transformer and unpacks its velocity (eps - x0). The schedule is shifted by ``mu`` of the image's
    token count and uses ``FluxPipeline``'s sigmas (:meth:`schedule_kwargs`).

    Args:
        pretrained: hub id or local folder with ``transformer/``, ``vae/``, ``text_encoder(_2)/``,
            ``tokenizer(_2)/``, ``scheduler/``.
        scheduler: diffusers scheduler class, configured from the model's own ``scheduler/`` config
            (``FlowMatchEulerDiscreteScheduler`` with ``use_dynamic_shifting``).
        scheduler_config: overrides of that config.
        prompt: the text conditioning of every step.
        prompt_embeds: a file of this prior's prompt embeddings (``lit-featinv encode-prompt``) instead of
            ``prompt``: no text encoder (T5-XXL among them) is loaded.
        resolution: image size in pixels, one number (square) or [height, width], multiples of 16 (VAE 8x, 2x2
            packing); null: the model's default (its VAE config's ``sample_size``: 1024, FluxPipeline's default).
        guidance_scale: the value of the distilled guidance embedding (FLUX.1-dev's default 3.5); used only when
            the transformer has one (``guidance_embeds``; FLUX.1-schnell has none).
        max_sequence_length: T5 tokens of the prompt (``FluxPipeline``'s default 512; FLUX.1-schnell's model card
            runs 256).
        gradient_checkpointing, vae_upcast, channels_last, compile, weights_dtype: as
            :class:`~lit_featinv.LatentDiffusionPrior`.
    """

    prediction = FLOW
    subfolder = "transformer"
    denoiser = ("FluxTransformer2DModel",)
    max_sequence_length = 512  # T5 tokens (FluxPipeline's default)

    def __init__(self, pretrained: str, scheduler: str = "diffusers.FlowMatchEulerDiscreteScheduler",
                 scheduler_config: dict | None = None, prompt: str = "", prompt_embeds: str | None = None,
                 resolution: int | tuple[int, int] | None = None, guidance_scale: float = 3.5,
                 gradient_checkpointing: bool = False, vae_upcast: bool | None = None, channels_last: bool = False,
                 compile: bool | dict = False, weights_dtype: str = "float32", max_sequence_length: int = 512):
        self.text_kwargs = {"max_sequence_length": max_sequence_length}
        super().__init__(pretrained, scheduler, scheduler_config, prompt, prompt_embeds, resolution,
                         gradient_checkpointing, vae_upcast, channels_last, compile, weights_dtype)
        self.guidance_scale = guidance_scale

    @classmethod
    def encode_prompt(cls, pretrained: str, prompt: str, key: str = "model.prior.pretrained",
                      max_sequence_length: int | None = None) -> dict:
        """As ``FluxPipeline.encode_prompt``: T5's tokens (``max_sequence_length``, default
        :attr:`max_sequence_length`), CLIP's ``pooler_output``."""
        pooled = clip_text(pretrained, prompt, "text_encoder", "tokenizer", key, projection=False).pooler_output
        tokens = max_sequence_length or cls.max_sequence_length
        t5 = t5_text(pretrained, prompt, "text_encoder_2", "tokenizer_2", tokens, key)
        return {"prompt_embeds": t5.float(), "pooled_prompt_embeds": pooled.float()}

    @property
    def patch(self) -> int:
        return 2  # FluxPipeline packs 2x2 latent pixels into one token

    def schedule_kwargs(self, num_inference_steps: int) -> dict:
        """``mu`` (:class:`~lit_featinv.models.conditioned.PromptConditionedPrior`) and, as ``FluxPipeline``, the sigmas
        1 .. 1/N (the scheduler's own would end at 1/1000)."""
        kwargs = super().schedule_kwargs(num_inference_steps)
        if not self.scheduler.config.get("use_flow_sigmas"):
            kwargs["sigmas"] = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps).tolist()
        return kwargs

    def denoise(self, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Pack, call the transformer, unpack: its velocity (eps - x0) in the sample's shape, float32."""
        batch, channels, height, width = sample.shape
        packed = FluxPipeline._pack_latents(sample, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, sample.device, sample.dtype)
        tokens = self.batch("prompt_embeds", batch)
        guidance = None
        if self.unet.config.guidance_embeds:
            guidance = torch.full((batch,), self.guidance_scale, device=sample.device, dtype=torch.float32)
        timestep = self.per_sample(t, sample) / self.scheduler.config.num_train_timesteps  # it takes sigma
        out = self.unet(hidden_states=packed, timestep=timestep, guidance=guidance, encoder_hidden_states=tokens,
                        pooled_projections=self.batch("pooled_prompt_embeds", batch),
                        txt_ids=tokens.new_zeros(tokens.shape[1], 3), img_ids=image_ids).sample
        return FluxPipeline._unpack_latents(out, height, width, 1).float()  # latent size: a scale factor of 1
