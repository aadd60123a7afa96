"""Stable Diffusion 3.x as a prior: the MMDiT transformer (a velocity model, flow matching), three text encoders."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .conditioned import PromptConditionedPrior
from .priors import FLOW
from .text import clip_text, t5_text


class StableDiffusion3Prior(PromptConditionedPrior):
    """Stable Diffusion 3 / 3.5 (e.g. ``stabilityai/stable-diffusion-3.5-medium``) conditioned on one fixed prompt
    (default empty), without classifier-free guidance: one transformer call per iteration, as
    ``StableDiffusion3Pipeline`` with ``guidance_scale`` 1.

    The ``SD3Transformer2DModel`` predicts the flow-matching velocity eps - x0; its 16-channel latents are scaled and
    shifted as the VAE config says (``scaling_factor``, ``shift_factor``). The prompt's tokens are the penultimate
    hidden states of the two CLIP encoders (side by side, zero-padded to T5's width) followed by T5's
    ``max_sequence_length`` tokens; the pooled conditioning is both CLIP ``text_embeds``.

    Args:
        pretrained: hub id or local folder with ``transformer/``, ``vae/``, ``text_encoder(_2, _3)/``,
            ``tokenizer(_2, _3)/``, ``scheduler/``.
        scheduler: diffusers scheduler class, configured from the model's own ``scheduler/`` config
            (``FlowMatchEulerDiscreteScheduler`` with ``shift`` 3.0).
        scheduler_config: overrides of that config.
        prompt: the text conditioning of every step.
        prompt_embeds: a file of this prior's prompt embeddings (``lit-featinv encode-prompt``) instead of
            ``prompt``: no text encoder (T5-XXL among them) is loaded.
        resolution: image size in pixels, one number (square) or [height, width], multiples of 16 (VAE 8x, 2x2
            patches), at most the transformer's position grid (``pos_embed_max_size`` patches a side); null: the
            model's default (the transformer's ``sample_size`` x 8: 1024).
        gradient_checkpointing, vae_upcast, channels_last, compile, weights_dtype: as
            :class:`~lit_featinv.LatentDiffusionPrior`.
    """

    prediction = FLOW
    subfolder = "transformer"
    denoiser = ("SD3Transformer2DModel",)
    max_sequence_length = 256  # T5 tokens (StableDiffusion3Pipeline's default)

    @classmethod
    def encode_prompt(cls, pretrained: str, prompt: str, key: str = "model.prior.pretrained") -> dict:
        """As ``StableDiffusion3Pipeline.encode_prompt`` (no clip skip): both CLIP encoders padded to
        ``tokenizer``'s length, T5 to :attr:`max_sequence_length` tokens."""
        first = clip_text(pretrained, prompt, "text_encoder", "tokenizer", key, projection=True)
        clips = [first, clip_text(pretrained, prompt, "text_encoder_2", "tokenizer_2", key, projection=True,
                                  max_length=first.hidden_states[-2].shape[1])]  # the first tokenizer's length
        t5 = t5_text(pretrained, prompt, "text_encoder_3", "tokenizer_3", cls.max_sequence_length, key)
        tokens = torch.cat([clip.hidden_states[-2] for clip in clips], dim=-1)
        tokens = F.pad(tokens, (0, t5.shape[-1] - tokens.shape[-1]))
        return {"prompt_embeds": torch.cat([tokens, t5], dim=-2).float(),
                "pooled_prompt_embeds": torch.cat([clip.text_embeds for clip in clips], dim=-1).float()}

    @property
    def patch(self) -> int:
        return self.unet.config.patch_size

    def max_latent_size(self) -> int | None:
        size = self.unet.config.get("pos_embed_max_size")
        return size * self.patch if size else None

    def denoise(self, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The transformer's velocity (eps - x0), float32."""
        batch = sample.shape[0]
        return self.unet(hidden_states=sample, timestep=self.per_sample(t, sample),
                         encoder_hidden_states=self.batch("prompt_embeds", batch),
                         pooled_projections=self.batch("pooled_prompt_embeds", batch)).sample.float()
