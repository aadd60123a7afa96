"""The guided reverse loop as one plain function: the scheduler's steps, K guided iterations per step (re-noising back
to t between them), samples leaving the batch when a callback says so. What is guided, kept and shown is the
caller's (:class:`~lit_featinv.module.FeatureInversion` passes the guidance, best-image tracking and stopping)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from .sampling import alpha_bar, fork, noise_space, renoise, step_kwargs


@dataclass
class Iteration:
    """One guided iteration, as callbacks see it."""
    step: int  # scheduler step index i
    k: int  # iteration at this step, 0..K-1
    t: torch.Tensor
    w: float
    rows: torch.Tensor  # the samples of the batch still in it (indices into the original batch)
    image: torch.Tensor  # clean estimate before guidance, as an image in [0, 1]
    guided_x0: torch.Tensor  # clean estimate from the guided noise (a sample, not decoded)


def reverse_loop(guided: Callable, scheduler, sample: torch.Tensor, gens: list[torch.Generator],
                 iterations_at: Callable[[int], int], weight: Callable[[int], float],
                 on_iteration: Callable[[Iteration], torch.Tensor | None] | None = None,
                 after_step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
                 eta: float = 0.0, progress: Callable[[Iterable], Iterable] = iter) -> tuple[torch.Tensor, torch.Tensor]:
    """Run every step of ``scheduler`` (timesteps set) from ``sample``.

    ``guided(sample, t, abar, rows, w) -> (model output, image, guided_x0)`` is one guided model call for the rows
    still in the batch; ``on_iteration(Iteration)`` may return a bool mask of rows that leave the batch now;
    ``after_step(sample, rows, step) -> sample`` sees each stepped sample (e.g. to mark NaN ones). Each sample's noise
    comes from its own generator. Returns the final samples of the rows left, and those rows.
    """
    rows = torch.arange(len(sample), device=sample.device)
    space = noise_space(scheduler)
    for i, t in enumerate(progress(scheduler.timesteps)):
        abar, abar_prev = alpha_bar(scheduler, i).to(sample), alpha_bar(scheduler, i + 1).to(sample)
        w, iterations = weight(i) if abar > 0 else 0.0, iterations_at(i)  # pure noise (abar 0) has no x0 to guide
        for k in range(iterations):
            output, image, guided_x0 = guided(sample, t, abar, rows, w)
            leave = on_iteration(Iteration(i, k, t, w, rows, image, guided_x0)) if on_iteration else None
            if leave is not None and leave.any():
                keep = ~leave
                rows, sample, output = rows[keep], sample[keep], output[keep]
                gens = [g for g, kept in zip(gens, keep.tolist()) if kept]
                if not len(rows):
                    return sample, rows
            last = k == iterations - 1
            stepper = scheduler if last else fork(scheduler)
            sample = stepper.step(output, t, sample, **step_kwargs(stepper, gens, eta=eta)).prev_sample
            if not last:  # back to t, in the sample's own space
                sample = renoise(sample, abar, abar_prev, gens, space)
            if after_step is not None:
                sample = after_step(sample, rows, i)
    return sample, rows
