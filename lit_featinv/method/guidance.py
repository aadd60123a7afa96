"""Guidance: turns the diffusion model's prediction at (z_t, t) into the guided one. A guidance class is chosen by
``class_path`` (``model.guidance``); the loop, the scheduler and the prior stay the same for every one.

Each computes the gradient g of the objective (the feature loss of the decoded clean estimate) in its own way; then,
as the paper: g is rescaled per sample to the norm of the predicted noise eps, clipped element-wise to mean +- theta
std, and eps_tilde = eps + w * g is handed back in the model's own output type (epsilon, sample, v), so any diffusers
scheduler steps with it unchanged.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..models.loading import load_pretrained
from ..models.priors import decode_latents
from .sampling import join_prediction, split_prediction
from .schedules import per_step


def load_tiny_decoder(source: str | None, subfolder: str | None, key: str):
    """A cheaper decoder for the gradient (a diffusers ``AutoencoderTiny`` folder or hub id), frozen; None: none."""
    if source is None:
        return None
    from diffusers import AutoencoderTiny
    return load_pretrained(AutoencoderTiny, source, key, subfolder=subfolder,
                           torch_dtype=torch.float32).requires_grad_(False).eval()


def check_tiny_decoder(decoder, prior, key: str) -> None:
    """A cheaper ``decoder`` (None: nothing to check) reads the prior's latents and gives images of the prior
    decoder's shape; else one line naming ``key``."""
    if decoder is None:
        return
    if not hasattr(prior, "vae"):
        raise ConfigError(key, f"{type(prior).__name__} is a pixel-space prior: there is no decoder to replace")
    latent = torch.zeros(1, prior.sample_shape[0], 8, 8)
    with torch.no_grad():
        want = tuple(prior.decode(latent.to(prior.vae.device)).shape)
        try:
            got = tuple(decode_latents(decoder, latent.to(decoder.device)).shape)
        except RuntimeError as err:
            got = f"an error ({str(err).splitlines()[0]})"
    if got != want:
        raise ConfigError(key, f"does not fit the prior: an 8x8 latent with {prior.sample_shape[0]} channels decodes "
                               f"to {got}, the prior's VAE gives {want}")


class Guidance(nn.Module):
    """The paper's shaping and weight schedule; subclasses say which gradient (:meth:`gradient`) and whether it goes
    through the UNet (``through_unet``, for the cost in metrics).

    Args:
        scale: w: one value, one per step, or pieces {from step: w} (the paper: 4 for 1000 DDPM steps; 0.5 for 50
            DDIM steps).
        start, stop: guide only steps ``start <= i < stop`` (step indices; ``stop`` null: to the end).
        rescale: rescale g per sample to the norm of the predicted noise.
        clip_theta: clip g element-wise to mean +- theta * std (<= 0: no clipping).
        allow_negative: accept w < 0 (guidance away from the target).
        decoder: for latent priors, a cheaper decoder the gradient goes through instead of the prior's VAE: a
            diffusers ``AutoencoderTiny`` folder or hub id (the TAESD family, e.g. ``madebyollin/taesd`` for SD 1.x/2.x);
            the prior's VAE still decodes every image that is scored, kept or saved. null: the prior's decoder.
        decoder_subfolder: where that decoder's config is (null: its top level).
    """

    through_unet = False

    def __init__(self, scale: float | list[float] | dict[int | str, float] = 0.5, start: int = 0,
                 stop: int | None = None, rescale: bool = True, clip_theta: float = 3.0, allow_negative: bool = False,
                 decoder: str | None = None, decoder_subfolder: str | None = None):
        super().__init__()
        for w in scale.values() if isinstance(scale, dict) else scale if isinstance(scale, (list, tuple)) else [scale]:
            if not math.isfinite(w):
                raise ConfigError("model.guidance.scale", f"{w} is not a finite number")
            if w < 0 and not allow_negative:
                raise ConfigError("model.guidance.scale", f"{w} < 0 guides away from the target; set "
                                                          f"model.guidance.allow_negative: true if that is meant")
        if not math.isfinite(clip_theta):
            raise ConfigError("model.guidance.clip_theta", f"{clip_theta} is not a finite number")
        if start < 0 or (stop is not None and stop < start):
            raise ConfigError("model.guidance.start", f"steps {start}..{stop} are not a range of step indices")
        self.scale, self.start, self.stop = scale, start, stop
        self.scales: list[float] | None = None  # one per step, from check()
        self.rescale, self.clip_theta = rescale, clip_theta
        self.decoder = load_tiny_decoder(decoder, decoder_subfolder, "model.guidance.decoder")

    def check(self, num_steps: int, prior=None) -> None:
        """A per-step ``scale`` fits the steps (one value each, or pieces from step 0); the guidance's own decoder
        reads the prior's latents and gives images of the prior decoder's shape."""
        self.scales = per_step(self.scale, num_steps, "model.guidance.scale")
        if prior is not None:
            check_tiny_decoder(self.decoder, prior, "model.guidance.decoder")

    def tiny_decode(self, sample: torch.Tensor) -> torch.Tensor:
        """The guidance's own decoder: a (clean) latent sample -> image in [-1, 1], differentiable."""
        return decode_latents(self.decoder, sample)

    def weight(self, step_index: int) -> float:
        """w at this step."""
        if step_index < self.start or (self.stop is not None and step_index >= self.stop):
            return 0.0
        if self.scales is not None:
            return float(self.scales[step_index])
        if isinstance(self.scale, (list, tuple, dict)):
            raise ConfigError("model.guidance.scale", "a per-step scale needs the number of steps: call check() first")
        return float(self.scale)

    def gradient(self, denoise: Callable, decode: Callable, objective: Callable, z: torch.Tensor, t, abar,
                 kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(model output, clean estimate as an image in [0, 1], gradient of the objective in z's shape)."""
        raise NotImplementedError

    def shape(self, grad: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Rescale the gradient to the noise's norm and clip it element-wise, per sample."""
        dims = tuple(range(1, grad.ndim))
        bad = ~torch.isfinite(grad).flatten(1).all(1)
        if bad.any():
            warnings.warn(f"the guidance gradient of {int(bad.sum())} sample(s) is NaN or Inf (the network, decoder or "
                          f"loss overflowed at this estimate): they take this iteration unguided; if it recurs, "
                          f"lower model.guidance.scale or run with trainer.precision 32-true")
            grad = torch.where(bad.view(-1, *[1] * len(dims)), torch.zeros_like(grad), grad)
        if self.rescale:
            norm = lambda x: torch.linalg.vector_norm(x, dim=dims, keepdim=True)  # noqa: E731
            grad = grad * norm(eps) / norm(grad).clamp_min(1e-12)
        if self.clip_theta > 0:
            mean, std = grad.mean(dims, keepdim=True), grad.std(dims, keepdim=True)
            grad = torch.minimum(torch.maximum(grad, mean - self.clip_theta * std), mean + self.clip_theta * std)
        return grad

    def forward(self, denoise: Callable, decode: Callable, objective: Callable, z: torch.Tensor, t, abar,
                kind: str, w: float, plain: bool = False) -> tuple[torch.Tensor, ...]:
        """(guided model output, clean estimate before guidance as an image in [0, 1], clean estimate from the
        guided noise (a sample, not decoded)), and with ``plain`` the model's own output. ``z`` is the
        scheduler-scaled model input."""
        if w == 0:
            with torch.no_grad():
                out = denoise(z, t)
                x0 = split_prediction(out, z, abar, kind)[1]
                return (out, decode(x0), x0) + ((out,) if plain else ())
        tiny = None if self.decoder is None else lambda x: (self.tiny_decode(x) + 1) / 2
        out, image, grad = self.gradient(denoise, tiny or decode, objective, z, t, abar, kind)
        eps, x0 = split_prediction(out, z, abar, kind)
        if tiny is not None:  # the gradient went through the cheap decoder; the image to score is the prior's
            with torch.no_grad():
                image = decode(x0)
        output = join_prediction(eps + w * self.shape(grad, eps), z, abar, kind)
        return (output, image, split_prediction(output, z, abar, kind)[1]) + ((out,) if plain else ())


class UNetGradient(Guidance):
    """The paper's gradient: d loss / d z_t, backpropagated through the decoder, the clean estimate and the UNet."""

    through_unet = True

    def gradient(self, denoise, decode, objective, z, t, abar, kind):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            out = denoise(z, t)
            image = decode(split_prediction(out, z, abar, kind)[1])
            grad = torch.autograd.grad(objective(image).sum(), z)[0]
        return out.detach(), image.detach(), grad


class TwistedGradient(UNetGradient):
    """The gradient as a score: eps_tilde = eps + lam sqrt(1 - abar) d loss / d z_t, with no rescaling and no clipping,
    is the model's noise prediction for p_t(z_t) exp(-lam loss(x0(z_t))): the twisted proposal of twisted diffusion
    sampling (TDS, Wu et al. 2023), whose weight in a particle sampler is exact (``ParticleSampler``'s
    ``correct_proposal``, with ``lam`` its own). ``scale`` is lam (one value, per step, or pieces, as w)."""

    def __init__(self, scale: float | list[float] | dict[int | str, float] = 1.0, start: int = 0,
                 stop: int | None = None, allow_negative: bool = False, decoder: str | None = None,
                 decoder_subfolder: str | None = None):
        super().__init__(scale, start, stop, False, 0.0, allow_negative, decoder, decoder_subfolder)

    def forward(self, denoise, decode, objective, z, t, abar, kind, w, plain=False):
        return super().forward(denoise, decode, objective, z, t, abar, kind, w * float((1 - abar).sqrt()), plain)


class CleanEstimateGradient(Guidance):
    """d loss / d x0: the clean estimate's gradient through the decoder and network only, no UNet backward (as
    manifold-preserving guidance, MPGD, He et al., ICLR 2024).

    It is the paper's gradient with the UNet's Jacobian left out: d loss / d z_t = (d loss / d x0) (I - sqrt(1 - abar)
    d eps / d z_t) / sqrt(abar), and without the d eps / d z_t term only the per-sample factor 1 / sqrt(abar) stays,
    which the rescaling to the noise's norm (on by default) removes; the clipping is scale-free. So w, rescaling and
    clipping keep the paper's meaning, and an iteration costs a UNet forward instead of a forward and a backward.
    """

    def gradient(self, denoise, decode, objective, z, t, abar, kind):
        with torch.no_grad():
            out = denoise(z, t)
            x0 = split_prediction(out, z, abar, kind)[1]
        with torch.enable_grad():
            x0 = x0.detach().requires_grad_(True)
            image = decode(x0)
            grad = torch.autograd.grad(objective(image).sum(), x0)[0]
        return out, image.detach(), grad
