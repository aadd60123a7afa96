"""Diffusion priors: a frozen diffusers denoiser, its scheduler and the decoding of samples to images."""
from __future__ import annotations

import copy

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL
from torch import nn

from ..config import import_object
from ..errors import ConfigError
from .loading import load_pretrained

DIFFUSERS_FLOOR = "0.33.0"  # the first release with every name the package imports (AutoModel; pyproject's floor)


def check_diffusers() -> None:
    """One line naming the installed and the required diffusers where the installed one is older than the floor."""
    from packaging.version import Version
    if Version(diffusers.__version__) < Version(DIFFUSERS_FLOOR):
        raise ImportError(f"lit_featinv needs diffusers>={DIFFUSERS_FLOOR} (diffusers.AutoModel), but diffusers "
                          f"{diffusers.__version__} is installed: pip install -U 'diffusers>={DIFFUSERS_FLOOR}'")


check_diffusers()  # before a missing name fails in a longer message
from diffusers import AutoModel  # noqa: E402 (after the check: older releases lack it)

FLOW = "flow_prediction"  # a flow-matching model's output, the velocity v = eps - x0 (diffusers' name)

WEIGHTS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def to_weights_dtype(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A forward pre-hook: floating inputs of 2 or more dimensions (images, latents, embeddings, position ids) in the
    module's weight dtype; timesteps and guidance scales (1-d) stay as they are, as diffusers' pipelines pass them."""
    def cast(value):
        if isinstance(value, dict):  # SDXL's added_cond_kwargs
            return {k: cast(v) for k, v in value.items()}
        if torch.is_tensor(value) and value.is_floating_point() and value.ndim >= 2:
            return value.to(module.dtype)
        return value
    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def flow_sigma(abar: torch.Tensor) -> torch.Tensor:
    """The flow-matching sigma with the signal-to-noise ratio of a variance-preserving level ``abar``:
    x = (1 - sigma) x0 + sigma eps is x_vp / (sqrt(abar) + sqrt(1 - abar)), sigma = sqrt(1 - abar) / (sqrt(abar) +
    sqrt(1 - abar))."""
    a, s = abar.sqrt(), (1 - abar).sqrt()
    return s / (a + s)


def vp_alpha_bar(sigma: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`flow_sigma`: abar = (1 - sigma)^2 / ((1 - sigma)^2 + sigma^2)."""
    return (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma ** 2)


def latent_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The VAE config's per-channel ``latents_mean`` and ``latents_std`` [1, C, 1, 1] (e.g. Playground v2.5), where it
    has both, as ``StableDiffusionXLPipeline`` reads them; None otherwise."""
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    return tuple(torch.tensor(v).view(1, -1, 1, 1).to(like.device, like.dtype) for v in (mean, std))


def decode_latents(vae, sample: torch.Tensor) -> torch.Tensor:
    """A diffusers autoencoder's decode of a sample in the UNet's latent space (its config's scale and shift, or its
    latents' mean and std, undone as diffusers' pipelines do) -> image in [-1, 1], float32, differentiable."""
    cfg, stats = vae.config, latent_stats(vae, sample)
    if stats is not None:  # StableDiffusionXLPipeline: z * std / scaling_factor + mean
        return vae.decode(sample * stats[1] / cfg.scaling_factor + stats[0]).sample.float()
    return vae.decode(sample / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)).sample.float()


def encode_latents(vae, image: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`decode_latents`: an image in [-1, 1] -> the mean of the autoencoder's latent distribution
    in the UNet's latent space (its config's shift and scale, or its latents' mean and std, applied), float32."""
    cfg = vae.config
    mean = vae.encode(image).latent_dist.mean
    stats = latent_stats(vae, mean)
    if stats is not None:  # StableDiffusionXLImg2ImgPipeline: (latents - mean) * scaling_factor / std
        return ((mean - stats[0]) * cfg.scaling_factor / stats[1]).float()
    return ((mean - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor).float()


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
        weights_dtype: the dtype the UNet (or transformer) holds its weights in: ``float32``, or ``bfloat16`` /
            ``float16`` for half the memory (FLUX.1's 12B transformer: 24 GB instead of 48 GB); its image and
            conditioning inputs are cast to it, and its prediction back to float32. The VAE stays float32.

    Attention runs through PyTorch's scaled-dot-product attention (diffusers' default processor).
    """

    prediction: str | None = None  # what the denoiser predicts where the scheduler's config cannot say (flow: FLOW)

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
        weights_dtype: str = "float32",
    ):
        super().__init__()
        if weights_dtype not in WEIGHTS_DTYPES:
            raise ConfigError("model.prior.weights_dtype", f"{weights_dtype!r} is not one of {list(WEIGHTS_DTYPES)}")
        self.pretrained = pretrained
        self.scheduler = load_scheduler(pretrained, scheduler, scheduler_config, scheduler_subfolder)
        self.unet = load_pretrained(AutoModel, pretrained, "model.prior.pretrained", subfolder=unet_subfolder,
                                    torch_dtype=WEIGHTS_DTYPES[weights_dtype])
        if weights_dtype != "float32":  # its inputs follow its weights (and its float32 output is cast back)
            self.unet.register_forward_pre_hook(to_weights_dtype, with_kwargs=True)
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

    def schedule_kwargs(self, num_inference_steps: int) -> dict:
        """Further arguments of ``scheduler.set_timesteps`` for this prior (FLUX: the shift ``mu``; a view: its
        ``sigmas``); none by default."""
        return {}

    def unet_kwargs(self, batch_size: int) -> dict:
        """Extra UNet inputs (conditioning); none for unconditional models."""
        return {}

    def decode(self, sample: torch.Tensor) -> torch.Tensor:
        """A (clean) sample -> image in [-1, 1], differentiable."""
        return sample

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """An image in [-1, 1] -> its clean sample (the inverse of :meth:`decode`)."""
        return image


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
                 compile: bool | dict = False, weights_dtype: str = "float32"):
        super().__init__(pretrained, scheduler, scheduler_config, unet_subfolder, gradient_checkpointing,
                         channels_last=channels_last, compile=compile, weights_dtype=weights_dtype)
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

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """An image in [-1, 1] -> the VAE encoder's mean latent, scaled (and shifted) as :meth:`decode` undoes it;
        in float32 under any precision (it runs once per image, outside the guided loop)."""
        with torch.autocast(image.device.type, enabled=False):
            return encode_latents(self.vae, image.float())


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
                 vae_upcast: bool | None = None, channels_last: bool = False, compile: bool | dict = False,
                 weights_dtype: str = "float32"):
        super().__init__(pretrained, scheduler, scheduler_config, gradient_checkpointing=gradient_checkpointing,
                         vae_upcast=vae_upcast, channels_last=channels_last, compile=compile,
                         weights_dtype=weights_dtype)
        self.prompt = prompt
        self.register_buffer("prompt_embeds", encode_prompt(pretrained, prompt), persistent=False)

    def unet_kwargs(self, batch_size: int) -> dict:
        return {"encoder_hidden_states": self.prompt_embeds.expand(batch_size, -1, -1)}  # a buffer: moved and cast
                                                                                            # with the UNet


class FlowMatchingView(DiffusionPrior):
    """A variance-preserving diffusers model with epsilon prediction (e.g. the zoo's pixel DDPM) seen exactly as a
    flow-matching model: x_flow = x / (sqrt(abar) + sqrt(1 - abar)) at sigma = :func:`flow_sigma` (abar), the
    velocity eps - x0. Its scheduler is ``FlowMatchEulerDiscreteScheduler`` over the sigmas of the model's own
    timesteps for N steps (as ``spacing`` spaces them), so that unguided Euler on the view is DDIM (eta 0) on the
    model: the flow-matching code path checked on real learned weights. Started as flow models are, from N(0, 1) in
    flow space, it starts from DDIM's start scaled by sqrt(abar) + sqrt(1 - abar) (1.029 at t = 980).

    Args:
        pretrained, unet_subfolder, scheduler_subfolder, gradient_checkpointing, channels_last, compile: as
            :class:`DiffusionPrior`.
        spacing: the scheduler class whose timesteps (from the model's own scheduler config, plus
            ``spacing_config``) the view steps through.
    """

    prediction = FLOW

    def __init__(self, pretrained: str, spacing: str = "diffusers.DDIMScheduler", spacing_config: dict | None = None,
                 unet_subfolder: str | None = "unet", scheduler_subfolder: str | None = "scheduler",
                 gradient_checkpointing: bool = False, channels_last: bool = False, compile: bool | dict = False):
        super().__init__(pretrained, spacing, spacing_config, unet_subfolder, gradient_checkpointing,
                         scheduler_subfolder, channels_last, compile)
        self.grid = self.scheduler  # the model's own schedule: alphas_cumprod, and its timesteps for N steps
        if self.grid.config.get("prediction_type", "epsilon") != "epsilon":
            raise ConfigError("model.prior.pretrained", f"{pretrained!r} predicts {self.grid.config.prediction_type}; "
                                                        f"the view takes an epsilon-prediction model")
        from diffusers import FlowMatchEulerDiscreteScheduler
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.grid.config.num_train_timesteps,
                                                         shift=1.0)
        abar = self.grid.alphas_cumprod.double()
        self.log_snr = (abar / (1 - abar)).log()  # decreasing with the model's timestep

    def schedule_kwargs(self, num_inference_steps: int) -> dict:
        grid = copy.deepcopy(self.grid)
        grid.set_timesteps(num_inference_steps)
        return {"sigmas": flow_sigma(grid.alphas_cumprod[grid.timesteps].double()).tolist()}

    def model_timestep(self, abar: torch.Tensor) -> float:
        """The model's (continuous) timestep of a signal level: log-SNR interpolated in its schedule; one on its
        training grid (within 1e-3) as that integer."""
        t = float(np.interp(-float((abar / (1 - abar)).log()), -self.log_snr.numpy(), np.arange(len(self.log_snr))))
        return float(round(t)) if abs(t - round(t)) < 1e-3 else t

    def denoise(self, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = vp_alpha_bar(torch.as_tensor(t, dtype=torch.float64).cpu() / self.scheduler.config.num_train_timesteps)
        a, s = float(abar.sqrt()), float((1 - abar).sqrt())
        x = sample * (a + s)
        t_model = self.model_timestep(abar)  # a tensor: UNet2DModel truncates a Python number to an integer
        t_model = torch.tensor(t_model, dtype=torch.long if t_model.is_integer() else torch.float32, device=x.device)
        eps = self.unet(x, t_model, **self.unet_kwargs(sample.shape[0])).sample.float()
        return eps - (x - s * eps) / a
