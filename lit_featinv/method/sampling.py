"""Scheduler-agnostic diffusion maths: prediction-type conversions, re-noising, per-sample seeds.

Everything here reads the scheduler's own config and state (``prediction_type``, ``alphas_cumprod``, ``sigmas``)
so that any diffusers scheduler can be stepped unchanged with a guided model output.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import inspect

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..errors import ConfigError


def sample_seed(seed: int, sample_id: str, index: int) -> int:
    """A 63-bit seed that depends only on (run seed, sample id, generation index)."""
    digest = hashlib.sha256(f"{seed}/{sample_id}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per sample: the noise of a sample is the same on any device and batch."""
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def alpha_bar(scheduler, index: int) -> torch.Tensor:
    """The signal level abar at the ``index``-th step of the schedule (``len(timesteps)``: after the last step).

    Schedulers with ``sigmas`` (Euler, DPM-Solver, UniPC, ...; their timesteps may be fractional) give
    abar = 1 / (1 + sigma^2); the others (DDPM, DDIM, ...) ``alphas_cumprod[t]``.
    """
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None:
        return (1 / (1 + sigmas[index].double() ** 2)).float()
    if index < len(scheduler.timesteps):
        return scheduler.alphas_cumprod[int(scheduler.timesteps[index])]
    final = getattr(scheduler, "final_alpha_cumprod", None)  # DDIM's level after the last step
    return torch.as_tensor(1.0 if final is None else final)


def in_sigma_space(scheduler) -> bool:
    """Samples are x0 + sigma * eps (Euler-type schedulers, ``init_noise_sigma > 1``), not variance preserving."""
    return float(scheduler.init_noise_sigma) > 1


def split_prediction(output: torch.Tensor, sample: torch.Tensor, abar: torch.Tensor, prediction_type: str):
    """Model output -> (noise estimate eps, clean estimate x0) for the scheduler's prediction type."""
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if prediction_type == "epsilon":
        eps = output
        x0 = (sample - s * eps) / a
    elif prediction_type == "v_prediction":
        x0 = a * sample - s * output
        eps = a * output + s * sample
    elif prediction_type == "sample":
        x0 = output
        eps = (sample - a * x0) / s
    else:
        raise ValueError(f"unsupported scheduler prediction_type {prediction_type!r} (epsilon, v_prediction or sample)")
    return eps, x0


def join_prediction(eps: torch.Tensor, sample: torch.Tensor, abar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """A (guided) noise estimate eps -> the model output of the scheduler's prediction type."""
    if prediction_type == "epsilon":
        return eps
    a, s = abar.sqrt(), (1 - abar).sqrt()
    x0 = (sample - s * eps) / a
    if prediction_type == "v_prediction":
        return a * eps - s * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unsupported scheduler prediction_type {prediction_type!r} (epsilon, v_prediction or sample)")


def renoise(sample_prev: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor, gens,
            sigma_space: bool = False) -> torch.Tensor:
    """Forward-diffuse a sample from the previous (less noisy) step back to t (self-recurrence).

    Variance preserving: sqrt(abar_t / abar_prev) x_prev + sqrt(1 - abar_t / abar_prev) noise; in sigma space
    (sigma^2 = 1 / abar - 1): x_prev + sqrt(sigma_t^2 - sigma_prev^2) noise.
    """
    noise = randn_tensor(sample_prev.shape, generator=gens, device=sample_prev.device, dtype=sample_prev.dtype)
    if sigma_space:
        return sample_prev + (1 / abar_t - 1 / abar_prev).clamp_min(0).sqrt() * noise
    ratio = abar_t / abar_prev
    return ratio.sqrt() * sample_prev + (1 - ratio).sqrt() * noise


@functools.lru_cache
def step_parameters(scheduler_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(scheduler_class.step).parameters)


def step_kwargs(scheduler, gens, **extra) -> dict:
    """Keyword arguments that this scheduler's ``step`` accepts (generator, eta, ...)."""
    accepted = step_parameters(type(scheduler))
    kwargs = {"generator": gens, **extra}
    return {k: v for k, v in kwargs.items() if k in accepted}


def fork(scheduler):
    """A copy of a stateful scheduler, to take a step at the same timestep again (self-recurrence)."""
    return copy.deepcopy(scheduler)


def check_timesteps(scheduler, num_inference_steps: int, key: str = "model.prior.scheduler_config") -> None:
    """Refuse, naming the config key, a schedule the loop cannot run: a timestep outside the model's trained range
    0..num_train_timesteps-1 (e.g. Stable Diffusion's ``steps_offset: 1`` with 1000 "leading" steps gives 1000),
    repeated timesteps (second-order schedulers: one step must be one model call) or timesteps that do not decrease.
    Sets ``scheduler``'s timesteps: pass a fork."""
    name, config = type(scheduler).__name__, scheduler.config
    train = config.num_train_timesteps
    if num_inference_steps > train:
        raise ConfigError("model.num_inference_steps", f"{num_inference_steps} is more than the {train} steps the "
                                                       f"model was trained with (num_train_timesteps)")
    try:
        scheduler.set_timesteps(num_inference_steps)
    except ValueError as err:
        raise ConfigError(key, f"{name} cannot make {num_inference_steps} steps: {err}") from err
    t = scheduler.timesteps.double()
    where = (f"{name} with {num_inference_steps} steps (timestep_spacing {config.get('timestep_spacing', 'leading')!r}, "
             f"steps_offset {config.get('steps_offset', 0)})")
    outside = t[(t < 0) | (t >= train)]
    if len(outside):
        raise ConfigError(key, f"{where} gives timestep {outside[0].item():g}, outside the model's 0..{train - 1}; "
                               f"set timestep_spacing: trailing (or steps_offset: 0) there")
    if len(torch.unique(t)) != len(t):
        raise ConfigError(key, f"{where} repeats timesteps (a second-order scheduler?); each step must be one model "
                               f"call: use e.g. DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler")
    if (t[1:] >= t[:-1]).any():
        raise ConfigError(key, f"{where} gives timesteps that do not decrease: {t[:8].tolist()} ...")
