"""Noise optimisation (as DOODL and ReNO, for features): another way of generating, chosen as ``model.sampler``. No
guidance: each generation's initial noise is optimised by Adam through the whole short sampler (the prior's scheduler,
its own noise fixed per generation), the objective on the decoded final image. The way to steer few-step models
(SDXL-Turbo, SD 3.5 Large Turbo, FLUX.1-schnell), where a guided step has no later steps to correct it."""
from __future__ import annotations

import math
import warnings

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .guidance import check_tiny_decoder, load_tiny_decoder
from .measure import track_best
from .particles import clone
from .records import BestImage, Trajectory
from .sampling import generators, model_input, step_kwargs


class NoiseOptimization:
    """Generate by optimising each generation's initial noise z_T through the sampler (``model.num_inference_steps``
    steps of the prior's scheduler; a stochastic one, e.g. Euler ancestral, draws the same noise in every pass, so the
    output is a function of z_T) to minimise the feature loss of the final image. ``model.guidance`` and
    ``model.recurrence`` are not used. A generation's best image (smallest loss over the optimisation, as saved) is
    kept as usual; its final image is the sampler's output from the last noise.

    Args:
        optimization_steps: Adam steps on the noise (0: the sampler's plain output from the seed's noise).
        lr: Adam's learning rate, on the unit noise (the scheduler's ``init_noise_sigma`` scales it after); 0.2 and
            0.4 reached a cosine at 25 Adam steps that 0.05 did not reach at 50 on the zoo's latent DDPM through one
            and four DDIM steps (``benchmarks/results/noise-optimisation-zoo.md``).
        norm_weight: weight of the penalty (||z|| - sqrt(n))^2 / n that keeps the noise's norm that of an
            n-dimensional standard Gaussian (where the prior's noise lives; ReNO's noise regularisation).
        checkpointing: recompute each denoiser call in the backward pass instead of keeping its activations (the
            memory of one step instead of all; one more forward per step). It nests with the prior's
            ``gradient_checkpointing`` (the backward then recomputes each call twice: the least memory, the most
            FLOPs; ``benchmarks/results/scale.md``).
        decoder: for latent priors, a cheaper decoder the gradient goes through instead of the prior's VAE: a
            diffusers ``AutoencoderTiny`` folder or hub id (``madebyollin/taesdxl``, ``madebyollin/taesd3``,
            ``madebyollin/taef1``); the prior's VAE still decodes every image that is scored, kept or saved.
        decoder_subfolder: where that decoder's config is (null: its top level).
        distilled_steps: the step count the prior was distilled for (its model card's); more steps warn.

    Cost per image: ``num_inference_steps * (optimization_steps + 1)`` denoiser forwards (``nfe``) and
    ``num_inference_steps * optimization_steps`` backwards (``unet_backward``), plus as many recomputed forwards with
    checkpointing.
    """

    generates = True  # replaces the guided loop (FeatureInversion.generate)

    def __init__(self, optimization_steps: int = 8, lr: float = 0.2, norm_weight: float = 1.0,
                 checkpointing: bool = True, decoder: str | None = None, decoder_subfolder: str | None = None,
                 distilled_steps: int | None = None):
        if optimization_steps < 0:
            raise ConfigError("model.sampler.optimization_steps", f"{optimization_steps} is not a count (>= 0)")
        if not lr > 0:
            raise ConfigError("model.sampler.lr", f"{lr} is not a learning rate (> 0)")
        if not (math.isfinite(norm_weight) and norm_weight >= 0):
            raise ConfigError("model.sampler.norm_weight", f"{norm_weight} is not a weight (>= 0)")
        if distilled_steps is not None and distilled_steps < 1:
            raise ConfigError("model.sampler.distilled_steps", f"{distilled_steps} is not a count (>= 1)")
        self.optimization_steps, self.lr, self.norm_weight = optimization_steps, lr, norm_weight
        self.checkpointing, self.distilled_steps = checkpointing, distilled_steps
        self.decoder = load_tiny_decoder(decoder, decoder_subfolder, "model.sampler.decoder")

    def check(self, saved: int, stop_cosine: float | None = None, steps: int | None = None, prior=None) -> None:
        """The module's settings suit noise optimisation (called by :class:`~lit_featinv.FeatureInversion`)."""
        if stop_cosine is not None:
            raise ConfigError("model.stop_cosine", "noise optimisation (model.sampler) keeps the best image of its "
                                                   "Adam steps and has no steps to stop at: set stop_cosine: null")
        if self.optimization_steps == 0:
            warnings.warn("model.sampler.optimization_steps is 0 and noise optimisation uses no guidance: this only "
                          "samples the prior", stacklevel=2)
        if steps is not None and self.distilled_steps is not None and steps > self.distilled_steps:
            warnings.warn(f"model.num_inference_steps is {steps}, but the prior was distilled for "
                          f"{self.distilled_steps} (model.sampler.distilled_steps, its model card's): more steps "
                          f"leave its training", stacklevel=2)
        if prior is not None:
            check_tiny_decoder(self.decoder, prior, "model.sampler.decoder")

    def rows(self, saved: int) -> int:
        """Generations run per target: the saved ones."""
        return saved

    def sample_from(self, model, noise: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
        """The sampler's final sample from ``noise``, differentiable in it (a fresh scheduler and copies of the
        generators each pass: the same noise in every pass)."""
        scheduler, gens, denoise = model.fresh_scheduler(), [clone(g) for g in gens], model.prior.denoise
        sample = noise
        for t in scheduler.timesteps:
            z = model_input(scheduler, sample, t)
            grad = self.checkpointing and torch.is_grad_enabled()
            out = checkpoint(denoise, z, t, use_reentrant=False) if grad else denoise(z, t)
            sample = scheduler.step(out, t, sample, **step_kwargs(scheduler, gens, eta=model.eta)).prev_sample
        return sample

    def generate(self, model, target: torch.Tensor, seeds: list[int], stop=lambda: None) -> dict:
        """Optimise each generation's noise (``model``: the :class:`~lit_featinv.FeatureInversion` whose prior,
        extractor and loss it uses; ``stop()`` between Adam steps may raise to end the run); the same output as
        :meth:`FeatureInversion.generate`."""
        gens = generators(seeds)
        scheduler = model.fresh_scheduler()
        scale = float(getattr(scheduler, "init_noise_sigma", 1.0))  # Euler's sigma_max: Adam steps the unit noise
        noise = (model.initial_noise(gens, scheduler) / scale).requires_grad_(True)
        optimizer = torch.optim.Adam([noise], lr=self.lr)
        rows, n = torch.arange(len(seeds), device=model.device), noise[0].numel()
        best, trajectory = BestImage(), Trajectory(len(seeds))
        for step in range(self.optimization_steps + 1):
            stop()
            last = step == self.optimization_steps
            with torch.set_grad_enabled(not last):
                sample = self.sample_from(model, noise * scale, gens)
                seen, image = self.images(model, sample)
                if not last:
                    penalty = self.norm_weight * (noise.flatten(1).norm(dim=1) - math.sqrt(n)) ** 2 / n
                    optimizer.zero_grad()
                    (model.loss(model.extractor(seen), target) + penalty).sum().backward()
            loss, cosine = track_best(model.extractor, model.loss, best, [image.detach()], target, step, rows)
            trajectory.add(step, 0, rows, loss, cosine)
            if not last:
                optimizer.step()
        count = lambda value: torch.full((len(seeds),), value, dtype=torch.long)  # noqa: E731
        never = torch.full((len(seeds),), -1, device=model.device)
        steps = len(scheduler.timesteps)
        return {"image": image.detach(), "best_image": best.image, "best_step": best.step,
                "nfe": count(steps * (self.optimization_steps + 1)),
                "unet_backward": count(steps * self.optimization_steps), "failed_step": never, "stop_step": never,
                "trajectory": trajectory.per_sample()}

    def images(self, model, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A pass's image for the objective (through the cheap decoder where one is set and the pass has a
        gradient) and its image to score and keep (the prior's decode; without gradient beside the cheap one)."""
        if self.decoder is None or not torch.is_grad_enabled():
            image = model.to_image(sample)
            return image, image
        with torch.no_grad():
            image = model.to_image(sample)
        return (self.tiny(sample) + 1) / 2, image

    def tiny(self, sample: torch.Tensor) -> torch.Tensor:
        """The cheap decoder: a latent sample -> image in [-1, 1], differentiable."""
        from ..models.priors import decode_latents
        return decode_latents(self.decoder.to(sample.device), sample)
