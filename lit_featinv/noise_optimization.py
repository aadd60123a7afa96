"""Noise optimisation (as DOODL and ReNO, for features): no guidance; each generation's initial noise is optimised
by Adam through the whole short, deterministic sampler, the objective on the decoded final image."""
from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from .errors import ConfigError
from .method.measure import track_best
from .method.records import BestImage, Trajectory
from .method.sampling import generators, model_input, step_kwargs
from .module import FeatureInversion
from .runs.signals import STOP


class NoiseOptimization(FeatureInversion):
    """Generate by optimising the initial noise z_T through the sampler (``num_inference_steps`` steps of the prior's
    scheduler, deterministic: e.g. DDIM with eta 0) to minimise the feature loss of the final image; the guidance and
    the recurrence are not used. A generation's best image (smallest loss over the optimisation) is kept as usual;
    its final image is the sampler's output from the last noise.

    Args (beyond :class:`~lit_featinv.FeatureInversion`'s):
        optimization_steps: Adam steps on the noise (0: the sampler's plain output from the seed's noise).
        lr: Adam's learning rate.
        norm_weight: weight of the penalty (||z|| - sqrt(n))^2 / n that keeps the noise's norm that of an
            n-dimensional standard Gaussian (where the prior's noise lives).
        checkpointing: recompute each model call in the backward pass instead of keeping its activations (memory
            of one step instead of all; one more forward per step).

    Cost per image: ``num_inference_steps * (optimization_steps + 1)`` model forwards and
    ``num_inference_steps * optimization_steps`` backwards (plus as many recomputed forwards with checkpointing).
    """

    def __init__(self, *args, optimization_steps: int = 8, lr: float = 0.05, norm_weight: float = 1.0,
                 checkpointing: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if optimization_steps < 0:
            raise ConfigError("model.optimization_steps", f"{optimization_steps} is not a count (>= 0)")
        if not lr > 0:
            raise ConfigError("model.lr", f"{lr} is not a learning rate (> 0)")
        self.optimization_steps, self.lr, self.norm_weight = optimization_steps, lr, norm_weight
        self.checkpointing = checkpointing

    def sample_from(self, noise: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
        """The sampler's final sample from ``noise``, differentiable in it (a fresh scheduler each pass)."""
        scheduler = self.fresh_scheduler()
        sample = noise
        for t in scheduler.timesteps:
            z = model_input(scheduler, sample, t)
            out = checkpoint(self.prior.denoise, z, t, use_reentrant=False) if self.checkpointing and \
                torch.is_grad_enabled() else self.prior.denoise(z, t)
            sample = scheduler.step(out, t, sample, **step_kwargs(scheduler, gens, eta=self.eta)).prev_sample
        return sample

    def generate(self, target: torch.Tensor, seeds: list[int]) -> dict:
        gens = generators(seeds)
        scheduler = self.fresh_scheduler()
        scale = float(getattr(scheduler, "init_noise_sigma", 1.0))
        noise = self.initial_noise(gens, scheduler).requires_grad_(True)
        optimizer = torch.optim.Adam([noise], lr=self.lr)
        rows, n = torch.arange(len(seeds), device=self.device), noise[0].numel()
        best, trajectory = BestImage(), Trajectory(len(seeds))
        for step in range(self.optimization_steps + 1):
            STOP.check()
            last = step == self.optimization_steps
            with torch.set_grad_enabled(not last):
                image = self.to_image(self.sample_from(noise, gens))
                if not last:
                    penalty = self.norm_weight * (noise.flatten(1).norm(dim=1) / scale - math.sqrt(n)) ** 2 / n
                    optimizer.zero_grad()
                    (self.loss(self.extractor(image), target) + penalty).sum().backward()
            loss, cosine = track_best(self.extractor, self.loss, best, [image.detach()], target, step, rows)
            trajectory.add(step, 0, rows, loss, cosine)
            if not last:
                optimizer.step()
        count = lambda value: torch.full((len(seeds),), value, dtype=torch.long)  # noqa: E731
        never = torch.full((len(seeds),), -1, device=self.device)
        return {"image": image.detach(), "best_image": best.image, "best_step": best.step,
                "nfe": count(self.num_inference_steps * (self.optimization_steps + 1)),
                "unet_backward": count(self.num_inference_steps * self.optimization_steps), "failed_step": never,
                "stop_step": never,
                "trajectory": trajectory.per_sample()}
