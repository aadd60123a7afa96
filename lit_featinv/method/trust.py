"""Trust signals on a generation, measured on the image as saved (8-bit) in float32: how typical it is of the prior
(:class:`PriorScore`), and whether other networks see it as they see its target (:func:`check_generations`)."""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..models.priors import flow_sigma
from .measure import cosine
from .sampling import alpha_bar, fork, noise_space, prediction_type, split_prediction


def noised(x0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor, space: str) -> torch.Tensor:
    """The model's input for a clean sample at signal level ``abar`` with noise ``eps``, in the scheduler's own
    ``space`` (:func:`~lit_featinv.method.sampling.noise_space`): flow (1 - sigma) x0 + sigma eps; otherwise
    sqrt(abar) x0 + sqrt(1 - abar) eps (in sigma space, x0 + sigma eps scaled by 1 / sqrt(sigma^2 + 1) as
    ``scale_model_input`` does, which is the same; computed here, since that method reads the scheduler's step)."""
    if space == "flow":
        sigma = flow_sigma(abar)
        return (1 - sigma) * x0 + sigma * eps
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


class PriorScore:
    """The prior's own denoising error on an image: the mean squared error of its noise estimate, in units of the
    noise (eps), over the timesteps of a ``steps``-step schedule of the prior's scheduler, ``draws`` noise draws each:
    the unweighted ("simple") denoising loss of DDPM training, a Monte-Carlo proxy of the prior's negative ELBO. Lower
    is more typical of the prior. The noise comes from a generator seeded with ``seed``: the same for every image of
    a size, so that scores compare across images and runs. One piece for every prior: pixel and latent (the image is
    encoded by the prior's VAE, :meth:`~lit_featinv.DiffusionPrior.encode`), epsilon, v, sample and flow prediction,
    variance-preserving, sigma-space and flow-matching schedulers. Float32 under any precision; no backward.

    Cost: ``steps * draws`` denoiser forwards per image (and one VAE encode for a latent prior).

    Args:
        steps: the schedule whose timesteps are scored (``scheduler.set_timesteps(steps)``, with the prior's own
            arguments: FLUX's shift, a view's sigmas).
        draws: noise draws per timestep.
        seed: seed of the noise.
    """

    def __init__(self, steps: int = 10, draws: int = 1, seed: int = 0):
        for key, value in (("steps", steps), ("draws", draws)):
            if value < 1:
                raise ConfigError(f"model.prior_score.{key}", f"{value} is not a count (>= 1)")
        self.steps, self.draws, self.seed = steps, draws, seed

    def schedule(self, prior):
        """The prior's scheduler (a copy) set to ``steps`` steps."""
        train = prior.scheduler.config.num_train_timesteps
        if self.steps > train:
            raise ConfigError("model.prior_score.steps", f"{self.steps} is more than the {train} steps the model was "
                                                         f"trained with (num_train_timesteps)")
        scheduler = fork(prior.scheduler)
        scheduler.set_timesteps(self.steps, **prior.schedule_kwargs(self.steps))
        return scheduler

    def noise(self, shape: tuple[int, ...], device) -> torch.Tensor:
        """The fixed noise [steps, draws, *shape] (drawn on the CPU: the same on any device)."""
        gen = torch.Generator("cpu").manual_seed(self.seed)
        return torch.randn((self.steps, self.draws, *shape), generator=gen).to(device)

    @torch.no_grad()
    def __call__(self, prior, saved: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, C, H, W] as saved -> their scores [B] (float32)."""
        device = saved.device
        with torch.autocast(device.type, enabled=False):
            x0 = prior.encode(saved.float() / 127.5 - 1).float()
            scheduler = self.schedule(prior)
            kind, space = prediction_type(scheduler), noise_space(scheduler)
            noise = self.noise(tuple(x0.shape[1:]), device)
            batch = x0.repeat_interleave(self.draws, 0)  # image-major: [B * draws, ...]
            total = torch.zeros(len(x0), device=device)
            for i, t in enumerate(scheduler.timesteps.to(device)):
                abar = alpha_bar(scheduler, i).to(device=device, dtype=torch.float32)
                eps = noise[i].repeat(len(x0), *[1] * (noise.ndim - 2))
                sample = noised(batch, eps, abar, space)
                estimate, _ = split_prediction(prior.denoise(sample, t).float(), sample, abar, kind)
                total += (estimate - eps).pow(2).flatten(1).mean(1).view(len(x0), self.draws).sum(1)
        return total / (self.steps * self.draws)


@torch.no_grad()
def check_generations(checks: dict, classifiers: set[str], saved: torch.Tensor,
                      targets: list[torch.Tensor | None]) -> list[dict | None]:
    """Other networks on each generation against its target image: per generation, per check name, the ``cosine``
    of their features (and for ``classifiers``, whose features are class scores, whether the top-1 class ``agrees``);
    None for a generation whose target has no image (a feature, text or constructed target).

    ``saved``: uint8 generations [N, C, H, W]; ``targets``: per generation its target image (uint8 [C, H, W], as
    saved) or None. Float32 under any precision.
    """
    out: list[dict | None] = [None if target is None else {} for target in targets]
    rows = [r for r, target in enumerate(targets) if target is not None]
    if not checks or not rows:
        return [None] * len(targets)
    unique = {id(targets[r]): targets[r] for r in rows}  # a target's image is measured once for its generations
    for name, extractor in checks.items():
        generated = extractor.measure(saved[rows].float() / 255)
        own = {key: extractor.measure(image[None].float() / 255)[0] for key, image in unique.items()}
        reference = torch.stack([own[id(targets[r])] for r in rows])
        cos = cosine(generated, reference)
        agrees = generated.argmax(1) == reference.argmax(1)
        for n, r in enumerate(rows):
            value = float(cos[n])
            out[r][name] = {"cosine": None if math.isnan(value) else value}
            if name in classifiers:
                out[r][name]["agrees"] = bool(agrees[n])
    return out
