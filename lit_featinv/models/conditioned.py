"""What the newer latent priors (SDXL, SD 3.x, FLUX.1) share: a check of the folder's denoiser class before any
weights load, the image resolution and its latent patching, one fixed prompt encoded once (or read from a file) and
kept as buffers, and the resolution-dependent shift of flow-matching schedules."""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import ClassVar

import torch
from diffusers import ConfigMixin, DiffusionPipeline

from ..errors import ConfigError
from .loading import load_pretrained
from .priors import LatentDiffusionPrior
from .text import check_embeds, load_prompt_embeds, save_prompt_embeds


class ModelConfig(ConfigMixin):
    """Reads a diffusers model's ``config.json`` (``AutoModel`` switches its own ``config_name`` while it loads)."""
    config_name = "config.json"


def read_config(pretrained: str, subfolder: str | None = None) -> dict | None:
    """A model folder's (or hub id's) ``SUBFOLDER/config.json``, or with no subfolder its ``model_index.json``, without
    loading weights; None where there is none (or the hub cannot be reached: loading then says so)."""
    reader = DiffusionPipeline if subfolder is None else ModelConfig
    try:
        return dict(load_pretrained(SimpleNamespace(from_pretrained=reader.load_config), pretrained, "",
                                    subfolder=subfolder))
    except ConfigError:
        return None


def check_denoiser(pretrained: str, subfolder: str, prior: str, classes: tuple[str, ...], key: str,
                   **fields) -> None:
    """The folder's denoiser (``subfolder``) is one of ``classes`` with these config ``fields``; else one line naming
    ``key`` and what the folder holds (its pipeline class from ``model_index.json``, its denoiser class)."""
    config, index = read_config(pretrained, subfolder), read_config(pretrained)
    if config is None and index is None:
        return  # neither file is reachable: loading the weights reports it, with the offline hint
    found = (config or {}).get("_class_name")
    mismatch = {k: (config or {}).get(k) for k, v in fields.items() if (config or {}).get(k) != v}
    if found in classes and not mismatch:
        return
    pipeline = f" (model_index.json: {index['_class_name']})" if index and index.get("_class_name") else ""
    held = "".join(f" with {k} {v!r}" for k, v in mismatch.items()) if found in classes else ""
    held = f"holds a {found}{held} in {subfolder}/" if found else f"has no {subfolder}/"
    want = " or ".join(classes) + "".join(f" with {k} {v!r}" for k, v in fields.items())
    raise ConfigError(key, f"{pretrained!r} {held}{pipeline}; {prior} runs a {want}")


def vae_scale_factor(vae) -> int:
    """Image pixels per latent pixel, as diffusers' pipelines compute it from the VAE config."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


class PromptConditionedPrior(LatentDiffusionPrior):
    """A latent prior conditioned on one fixed prompt, at a chosen resolution (base of the SDXL, SD 3.x and FLUX.1
    priors; no classifier-free guidance: one denoiser call per iteration).

    The prompt is encoded once at start-up by the model's own text encoders, which are then dropped; or its
    embeddings are read from a file (``prompt_embeds``, written by ``lit-featinv encode-prompt``), and no text
    encoder is loaded at all. The embeddings are buffers: they move and cast with the prior.

    Subclasses say which denoiser they run (``denoiser``, ``subfolder``, ``fields``), how the prompt is encoded
    (:meth:`encode_prompt`), the embedding shapes the denoiser takes (:meth:`embed_dims`) and the denoiser call
    (:meth:`denoise`).
    """

    subfolder: ClassVar[str] = "unet"  # the denoiser's folder
    denoiser: ClassVar[tuple[str, ...]] = ()  # the denoiser classes this prior runs (its config's _class_name)
    fields: ClassVar[dict] = {}  # and the values its config must have
    text_kwargs: dict = {}  # what encode_prompt takes besides the prompt (a subclass's __init__ sets it)

    def __init__(self, pretrained: str, scheduler: str = "diffusers.FlowMatchEulerDiscreteScheduler",
                 scheduler_config: dict | None = None, prompt: str = "",
                 prompt_embeds: str | None = None, resolution: int | tuple[int, int] | None = None,
                 gradient_checkpointing: bool = False, vae_upcast: bool | None = None, channels_last: bool = False,
                 compile: bool | dict = False, weights_dtype: str = "float32"):
        check_denoiser(pretrained, self.subfolder, type(self).__name__, self.denoiser, "model.prior.pretrained",
                       **self.fields)
        super().__init__(pretrained, scheduler, scheduler_config, unet_subfolder=self.subfolder,
                         gradient_checkpointing=gradient_checkpointing, vae_upcast=vae_upcast,
                         channels_last=channels_last, compile=compile, weights_dtype=weights_dtype)
        self.latent_size = self.check_resolution(resolution)
        key = "model.prior.prompt_embeds"
        if prompt_embeds is None:
            key, embeds, source = ("model.prior.pretrained", self.encode_prompt(pretrained, prompt, **self.text_kwargs),
                                   "its text encoders")
        else:
            record = load_prompt_embeds(prompt_embeds)
            if prompt and prompt != record["prompt"]:
                raise ConfigError("model.prior.prompt", f"{prompt!r}, but the embeddings in {prompt_embeds!r} are of "
                                                        f"{record['prompt']!r}; give one of prompt or prompt_embeds")
            embeds, prompt, source = record, record["prompt"], repr(str(prompt_embeds))
        check_embeds(embeds, self.embed_dims(), source, key)
        self.prompt = prompt
        for name in self.embed_dims():
            self.register_buffer(name, embeds[name].float(), persistent=False)

    # ---- what each model family says ----------------------------------------------------------------------------
    @classmethod
    def encode_prompt(cls, pretrained: str, prompt: str, key: str = "model.prior.pretrained") -> dict:
        """The prompt's embeddings {name: tensor [1, ...]} from the model folder's text encoders."""
        raise NotImplementedError

    def embed_dims(self) -> dict[str, tuple[int, ...]]:
        """The shape after the batch of 1 of each embedding the denoiser takes (-1: any number of tokens); here an
        MMDiT's (SD 3.x, FLUX.1): tokens of its ``joint_attention_dim``, a vector of its ``pooled_projection_dim``."""
        config = self.unet.config
        return {"prompt_embeds": (-1, config.joint_attention_dim),
                "pooled_prompt_embeds": (config.pooled_projection_dim,)}

    @property
    def patch(self) -> int:
        """Latent pixels per token side: the latent height and width must be multiples of it."""
        return 1

    def max_latent_size(self) -> int | None:
        """The largest latent height or width the denoiser takes (None: no limit)."""
        return None

    # ---- shared ---------------------------------------------------------------------------------------------------
    def check_resolution(self, resolution: int | tuple[int, int] | None) -> tuple[int, int]:
        """(height, width) of the latent for an image ``resolution`` (pixels; one number: square; None: the model's
        default, from its denoiser's ``sample_size`` or else its VAE's)."""
        factor = vae_scale_factor(self.vae)
        if resolution is None:
            size = self.unet.config.get("sample_size") or self.vae.config.sample_size // factor
            resolution = tuple(s * factor for s in size) if isinstance(size, (list, tuple)) else size * factor
        height, width = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        multiple, largest = factor * self.patch, self.max_latent_size()
        if height < multiple or width < multiple or height % multiple or width % multiple:
            raise ConfigError("model.prior.resolution", f"{height}x{width} px: {type(self).__name__} needs multiples "
                                                        f"of {multiple} px (VAE {factor}x, latent patches "
                                                        f"{self.patch}x{self.patch})")
        if largest is not None and max(height, width) > largest * factor:
            raise ConfigError("model.prior.resolution", f"{height}x{width} px: the denoiser takes at most "
                                                        f"{largest * factor} px a side")
        return height // factor, width // factor

    @property
    def resolution(self) -> tuple[int, int]:
        """(height, width) of the images, pixels."""
        factor = vae_scale_factor(self.vae)
        return self.latent_size[0] * factor, self.latent_size[1] * factor

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(latent channels, height, width) of one sample: what the loop draws noise for and steps."""
        return (self.vae.config.latent_channels, *self.latent_size)

    def schedule_kwargs(self, num_inference_steps: int) -> dict:
        """A flow-matching schedule with ``use_dynamic_shifting`` gets the shift ``mu`` of this resolution's number of
        image tokens, as diffusers' SD3 and FLUX pipelines compute it; others nothing."""
        config = self.scheduler.config
        if not config.get("use_dynamic_shifting"):
            return {}
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift
        tokens = (self.latent_size[0] // self.patch) * (self.latent_size[1] // self.patch)
        return {"mu": calculate_shift(tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift,
                                      config.max_shift)}

    def batch(self, name: str, batch_size: int) -> torch.Tensor:
        """A prompt embedding buffer repeated for ``batch_size`` samples (a view)."""
        value = getattr(self, name)
        return value.expand(batch_size, *value.shape[1:])

    @staticmethod
    def per_sample(t, sample: torch.Tensor) -> torch.Tensor:
        """The timestep as one value per sample (transformers embed a 1-d tensor of timesteps)."""
        return torch.as_tensor(t, device=sample.device).expand(sample.shape[0]).to(sample.dtype)


def write_prompt_embeds(prior: type[PromptConditionedPrior], pretrained: str, prompt: str,
                        out: str | os.PathLike, key: str = "model.prior.pretrained", **kwargs) -> dict:
    """Encode ``prompt`` with ``prior``'s text encoders from ``pretrained`` (``kwargs``: its ``encode_prompt``'s,
    e.g. ``max_sequence_length``) and write the file that its ``prompt_embeds`` option reads; returns the
    embeddings."""
    embeds = prior.encode_prompt(pretrained, prompt, key, **kwargs)
    save_prompt_embeds(out, embeds, f"{prior.__module__}.{prior.__qualname__}", pretrained, prompt)
    return embeds
