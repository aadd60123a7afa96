"""Diffusion priors: a frozen diffusers denoiser, its scheduler and the decoding of samples to images."""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, AutoModel
from torch import nn

from ..config import import_object
from ..errors import ConfigError
from .loading import load_pretrained


def decode_latents(vae, sample: torch.Tensor) -> torch.Tensor:
    """A diffusers autoencoder's decode of a sample in the UNet's latent space (its config's scale and shift undone)
    -> image in [-1, 1], float32, differentiable."""
    cfg = vae.config
    return vae.decode(sample / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)).sample.float()


def load_scheduler(pretrained: str, scheduler: str = "diffusers.DDIMScheduler", scheduler_config: dict | None = None,
                   subfolder: str | None = "scheduler"):
    """The diffusers ``scheduler`` class configured from the model's own scheduler config plus ``scheduler_config``."""
    return load_pretrained(import_object(scheduler, "diffusers"), pretrained, "model.prior.pretrained",
                           subfolder=subfolder, **(scheduler_config or {}))


class DiffusionPrior(nn.Module):
    """A pixel-space diffusers model (e.g. a ``DDPMPipeline`` folder): samples are images in [-1, 1].

    Args:
        pretrained: hub id or local folder with ``unet/`` and ``scheduler/`` subfolders.
        scheduler: diffusers scheduler class that steps the reverse process, configured from the
            model's own ``scheduler/`` config (e.g. ``diffusers.DDIMScheduler``, ``diffusers.DDPMScheduler``).
        scheduler_config: overrides of that config (e.g. ``{timestep_spacing: trailing}``: Stable Diffusion's config has
            ``steps_offset: 1``, which with 1000 "leading" steps would give timestep 1000, past the trained range).
        unet_subfolder, scheduler_subfolder: where the UNet's and the scheduler's configs are; ``null`` for a
            repository that keeps them at its top level (``config.json``, ``scheduler_config.json``).
        gradient_checkpointing: recompute UNet activations in the backward pass to save memory.
        channels_last: keep the UNet's (and VAE's) weights in the channels-last memory format (faster convolutions
            on GPUs with tensor cores; benchmarks/gpu.py measures it).
        compile: ``torch.compile`` the UNet's forward (opt-in: the first iterations compile); a dict passes
            arguments to ``torch.compile`` (e.g. ``{mode: max-autotune}``).

    Attention runs through PyTorch's scaled-dot-product attention (diffusers' default processor).
    """

    def __init__(
        self,
        pretrained: str,
        scheduler: str = "diffusers.DDIMScheduler",
        scheduler_config: dict | None = None,
        unet_subfolder: str | None = "unet",
        gradient_checkpointing: bool = False,
        scheduler_subfolder: str | None = "scheduler",
        channels_last: bool = False,
        compile: bool | dict = False,
    ):
        super().__init__()
        self.pretrained = pretrained
        self.scheduler = load_scheduler(pretrained, scheduler, scheduler_config, scheduler_subfolder)
        self.unet = load_pretrained(AutoModel, pretrained, "model.prior.pretrained", subfolder=unet_subfolder,
                                    torch_dtype=torch.float32)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.requires_grad_(False).eval()
        self.channels_last, self.compile_unet = channels_last, compile
        self.speed_up(self.unet)

    def speed_up(self, model: nn.Module) -> None:
        """Apply ``channels_last`` to a network of the prior; ``compile`` to the UNet."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile_unet and model is self.unet:
            model.compile(**(self.compile_unet if isinstance(self.compile_unet, dict) else {}))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(channels, height, width) of one sample, from the UNet config."""
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, *size)

    def denoise(self, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction (noise, v or sample, as ``scheduler.config.prediction_type`` says), float32."""
        return self.unet(sample, t, **self.unet_kwargs(sample.shape[0])).sample.float()

    def unet_kwargs(self, batch_size: int) -> dict:
        """Extra UNet inputs (conditioning); none for unconditional models."""
        return {}

    def decode(self, sample: torch.Tensor) -> torch.Tensor:
        """A (clean) sample -> image in [-1, 1], differentiable."""
        return sample


class LatentDiffusionPrior(DiffusionPrior):
    """A latent diffusers model: UNet on ``AutoencoderKL`` latents, decoded by the VAE inside the loop.

    The latent scale (and shift) come from the VAE config.

    Args:
        vae_upcast: decode in float32 even under autocast. None: as the VAE config's ``force_upcast`` says (true
            for SD 1.x/2.x, whose VAE overflows in float16). False under ``bf16-mixed`` decodes in bf16: less GPU
            memory (estimated in benchmarks/results/memory-estimate-vae-bf16.md).
        gradient_checkpointing, channels_last, compile: as :class:`DiffusionPrior` (the first two also for the VAE).
    """

    def __init__(self, pretrained: str, scheduler: str = "diffusers.DDIMScheduler",
                 scheduler_config: dict | None = None, unet_subfolder: str = "unet", vae_subfolder: str = "vae",
                 gradient_checkpointing: bool = False, vae_upcast: bool | None = None, channels_last: bool = False,
                 compile: bool | dict = False):
        super().__init__(pretrained, scheduler, scheduler_config, unet_subfolder, gradient_checkpointing,
                         channels_last=channels_last, compile=compile)
        self.vae_upcast = vae_upcast
        self.vae = load_pretrained(AutoencoderKL, pretrained, "model.prior.pretrained", subfolder=vae_subfolder,
                                   torch_dtype=torch.float32)
        if gradient_checkpointing:
            self.vae.enable_gradient_checkpointing()
        self.requires_grad_(False).eval()
        self.speed_up(self.vae)

    def decode(self, sample: torch.Tensor) -> torch.Tensor:
        if getattr(self.vae.config, "force_upcast", False) if self.vae_upcast is None else self.vae_upcast:
            with torch.autocast(sample.device.type, enabled=False):
                return decode_latents(self.vae, sample.float())
        return decode_latents(self.vae, sample)


@torch.no_grad()
def encode_prompt(pretrained: str, prompt: str = "", key: str = "model.prior.pretrained") -> torch.Tensor:
    """The text conditioning [1, tokens, dim] of ``prompt`` from the model's ``text_encoder/`` and ``tokenizer/``,
    as ``StableDiffusionPipeline.encode_prompt`` computes it (padded to the tokenizer's length)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    text_encoder = load_pretrained(CLIPTextModel, pretrained, key, subfolder="text_encoder", torch_dtype=torch.float32)
    tokenizer = load_pretrained(CLIPTokenizer, pretrained, key, subfolder="tokenizer")
    length = tokenizer.model_max_length
    if length > text_encoder.config.max_position_embeddings:  # transformers builds an empty tokenizer without files
        raise ConfigError(key, f"{pretrained!r} has no usable tokenizer/ (model_max_length {length} > the text "
                               f"encoder's {text_encoder.config.max_position_embeddings} positions)")
    tokens = tokenizer(prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    mask = tokens.attention_mask if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder.eval()(tokens.input_ids, attention_mask=mask)[0].float()


class StableDiffusionPrior(LatentDiffusionPrior):
    """Stable Diffusion 1.x / 2.x (e.g. ``CompVis/stable-diffusion-v1-4``, ``stabilityai/stable-diffusion-2-1``),
    conditioned on one fixed prompt (default empty); no classifier-free guidance: one UNet call per iteration.

    The prompt is encoded once at start-up; the text encoder and tokenizer are then dropped. The image size
    follows from the UNet's ``sample_size`` and the VAE (512 px for SD 1.x, 768 px for SD 2.x).

    Args:
        pretrained: hub id or local folder with ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``.
        prompt: the text conditioning of every step.
        gradient_checkpointing, vae_upcast, channels_last, compile: as :class:`LatentDiffusionPrior`.
    """

    def __init__(self, pretrained: str, scheduler: str = "diffusers.DDIMScheduler",
                 scheduler_config: dict | None = None, prompt: str = "", gradient_checkpointing: bool = False,
                 vae_upcast: bool | None = None, channels_last: bool = False, compile: bool | dict = False):
        super().__init__(pretrained, scheduler, scheduler_config, gradient_checkpointing=gradient_checkpointing,
                         vae_upcast=vae_upcast, channels_last=channels_last, compile=compile)
        self.prompt = prompt
        self.register_buffer("prompt_embeds", encode_prompt(pretrained, prompt), persistent=False)

    def unet_kwargs(self, batch_size: int) -> dict:
        return {"encoder_hidden_states": self.prompt_embeds.expand(batch_size, -1, -1)}  # a buffer: moved and cast
                                                                                            # with the UNet
