"""Scheduler-agnostic diffusion maths: prediction-type conversions, re-noising, per-sample seeds.

Everything here reads the scheduler's own config and state (``prediction_type``, ``alphas_cumprod``, ``sigmas``)
so that any diffusers scheduler can be stepped unchanged with a guided model output. A step's noise level is its
signal level ``abar`` (the share of the clean sample in a variance-preserving sample), also for Euler-type
schedulers (sigma space: ``abar = 1 / (1 + sigma^2)``) and flow matching (``x = (1 - sigma) x0 + sigma eps``: the
``abar`` of the same signal-to-noise ratio, :func:`~lit_featinv.models.priors.flow_sigma`).
"""
from __future__ import annotations

import copy
import functools
import hashlib
import inspect

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..errors import ConfigError
from ..models.priors import FLOW, flow_sigma, vp_alpha_bar


def sample_seed(seed: int, sample_id: str, index: int) -> int:
    """A 63-bit seed that depends only on (run seed, sample id, generation index)."""
    digest = hashlib.sha256(f"{seed}/{sample_id}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per sample: the noise of a sample is the same on any device and batch."""
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def prediction_type(scheduler) -> str:
    """What the model predicts for this scheduler: its config's ``prediction_type`` (epsilon, v_prediction, sample,
    flow_prediction); a flow-matching scheduler without one (FlowMatchEulerDiscreteScheduler, which noises with
    ``scale_noise``) steps a velocity, ``flow_prediction``."""
    kind = scheduler.config.get("prediction_type")
    return kind or (FLOW if hasattr(scheduler, "scale_noise") else "epsilon")


def noise_space(scheduler) -> str:
    """How the loop's sample holds its noise: ``flow`` (x = (1 - sigma) x0 + sigma eps), ``sigma`` (x = x0 +
    sigma eps: Euler-type schedulers, ``init_noise_sigma > 1``) or ``vp`` (x = sqrt(abar) x0 + sqrt(1 - abar) eps)."""
    if prediction_type(scheduler) == FLOW:
        return "flow"
    return "sigma" if float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1 else "vp"


def alpha_bar(scheduler, index: int) -> torch.Tensor:
    """The signal level abar at the ``index``-th step of the schedule (``len(timesteps)``: after the last step).

    Schedulers with ``sigmas`` (Euler, DPM-Solver, UniPC, ...; their timesteps may be fractional) give
    abar = 1 / (1 + sigma^2), flow-matching ones the abar of their sigma's signal-to-noise ratio; the others (DDPM,
    DDIM, ...) ``alphas_cumprod[t]``.
    """
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None:
        sigma = sigmas[index].double()
        return (vp_alpha_bar(sigma) if noise_space(scheduler) == "flow" else 1 / (1 + sigma ** 2)).float()
    if index < len(scheduler.timesteps):
        return scheduler.alphas_cumprod[int(scheduler.timesteps[index])]
    final = getattr(scheduler, "final_alpha_cumprod", None)  # DDIM's level after the last step
    return torch.as_tensor(1.0 if final is None else final)


def model_input(scheduler, sample: torch.Tensor, t) -> torch.Tensor:
    """The model's input at ``t``: the scheduler's ``scale_model_input`` (sigma space: x / sqrt(sigma^2 + 1)); the
    sample itself for schedulers without one (flow matching)."""
    scale = getattr(scheduler, "scale_model_input", None)
    return sample if scale is None else scale(sample, t)


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
    elif prediction_type == FLOW:  # a velocity v = eps - x0 of x = (1 - sigma) x0 + sigma eps
        sigma = flow_sigma(abar)
        x0 = sample - sigma * output
        eps = sample + (1 - sigma) * output
    else:
        raise ValueError(f"unsupported scheduler prediction_type {prediction_type!r} (epsilon, v_prediction, sample "
                         f"or {FLOW})")
    return eps, x0


def join_prediction(eps: torch.Tensor, sample: torch.Tensor, abar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """A (guided) noise estimate eps -> the model output of the scheduler's prediction type."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == FLOW:  # at sigma = 1 (abar = 0) the velocity is not defined by eps: the loop leaves it unguided
        return (eps - sample) / (1 - flow_sigma(abar))
    a, s = abar.sqrt(), (1 - abar).sqrt()
    x0 = (sample - s * eps) / a
    if prediction_type == "v_prediction":
        return a * eps - s * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unsupported scheduler prediction_type {prediction_type!r} (epsilon, v_prediction, sample or "
                     f"{FLOW})")


def signal_noise(abar: torch.Tensor, space: str = "vp") -> tuple[torch.Tensor, torch.Tensor]:
    """(a, s) of x = a x0 + s eps at signal level ``abar`` in the sample's ``space`` (:func:`noise_space`):
    variance preserving (sqrt(abar), sqrt(1 - abar)), sigma space (1, sigma = sqrt(1 / abar - 1)), flow
    (1 - sigma, sigma)."""
    if space == "sigma":
        return torch.ones_like(abar), (1 / abar - 1).clamp_min(0).sqrt()
    if space == "flow":
        sigma = flow_sigma(abar)
        return 1 - sigma, sigma
    return abar.sqrt(), (1 - abar).clamp_min(0).sqrt()


def renoise(sample_prev: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor, gens,
            space: str = "vp") -> torch.Tensor:
    """Forward-diffuse a sample from the previous (less noisy) step back to t (self-recurrence), in the sample's own
    ``space`` (:func:`noise_space`), so that the result has the forward process's marginal at t: for x = a x0 + s eps
    (:func:`signal_noise`), x_t = (a_t / a_prev) x_prev + sqrt(s_t^2 - (a_t s_prev / a_prev)^2) noise.
    """
    noise = randn_tensor(sample_prev.shape, generator=gens, device=sample_prev.device, dtype=sample_prev.dtype)
    (a_t, s_t), (a_prev, s_prev) = signal_noise(abar_t, space), signal_noise(abar_prev, space)
    ratio = a_t / a_prev
    return ratio * sample_prev + (s_t ** 2 - (ratio * s_prev) ** 2).clamp_min(0).sqrt() * noise


@functools.lru_cache
def step_parameters(scheduler_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(scheduler_class.step).parameters)


def step_kwargs(scheduler, gens, **extra) -> dict:
    """Keyword arguments that this scheduler's ``step`` accepts (generator, eta, ...)."""
    accepted = step_parameters(type(scheduler))
    kwargs = {"generator": gens, **extra}
    return {k: v for k, v in kwargs.items() if k in accepted}


HISTORY = ("model_outputs", "ets", "last_sample", "cur_sample", "sample", "prev_derivative")  # per-sample state


def permute_history(scheduler, rows: torch.Tensor) -> None:
    """Give each sample of a batch the scheduler history of sample ``rows[i]`` (multistep schedulers keep earlier
    outputs per sample: DPM-Solver's ``model_outputs``, PNDM's ``ets``, ...), as resampled particles need."""
    def take(value):
        return value[rows] if torch.is_tensor(value) and value.ndim and len(value) == len(rows) else value
    for name in HISTORY:
        value = getattr(scheduler, name, None)
        if isinstance(value, list):
            setattr(scheduler, name, [take(v) for v in value])
        elif torch.is_tensor(value):
            setattr(scheduler, name, take(value))


def fork(scheduler):
    """A copy of a stateful scheduler, to take a step at the same timestep again (self-recurrence)."""
    return copy.deepcopy(scheduler)


def check_timesteps(scheduler, num_inference_steps: int, key: str = "model.prior.scheduler_config",
                    schedule: dict | None = None) -> None:
    """Refuse, naming the config key, a schedule the loop cannot run: a timestep outside the model's trained range
    0..num_train_timesteps-1 (e.g. Stable Diffusion's ``steps_offset: 1`` with 1000 "leading" steps gives 1000; flow
    matching's continuous timesteps run from num_train_timesteps down), repeated timesteps (second-order schedulers:
    one step must be one model call) or timesteps that do not decrease. ``schedule``: the prior's further arguments
    of ``set_timesteps`` (FLUX's ``mu``). Sets ``scheduler``'s timesteps: pass a fork."""
    name, config = type(scheduler).__name__, scheduler.config
    train = config.num_train_timesteps
    last = train if noise_space(scheduler) == "flow" else train - 1  # flow: sigma * train, from train down
    if num_inference_steps > train:
        raise ConfigError("model.num_inference_steps", f"{num_inference_steps} is more than the {train} steps the "
                                                       f"model was trained with (num_train_timesteps)")
    try:
        scheduler.set_timesteps(num_inference_steps, **(schedule or {}))
    except ValueError as err:
        raise ConfigError(key, f"{name} cannot make {num_inference_steps} steps: {err}") from err
    t = scheduler.timesteps.double()
    where = (f"{name} with {num_inference_steps} steps (timestep_spacing {config.get('timestep_spacing', 'leading')!r}, "
             f"steps_offset {config.get('steps_offset', 0)})")
    outside = t[(t < 0) | (t > last)]
    if len(outside):
        raise ConfigError(key, f"{where} gives timestep {outside[0].item():g}, outside the model's 0..{last}; "
                               f"set timestep_spacing: trailing (or steps_offset: 0) there")
    if len(torch.unique(t)) != len(t):
        raise ConfigError(key, f"{where} repeats timesteps (a second-order scheduler?); each step must be one model "
                               f"call: use e.g. DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler")
    if (t[1:] >= t[:-1]).any():
        raise ConfigError(key, f"{where} gives timesteps that do not decrease: {t[:8].tolist()} ...")
