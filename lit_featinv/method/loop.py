"""The guided reverse loop as one plain function: the scheduler's steps, K guided iterations per step (re-noising back
to t between them; one unguided iteration at pure noise), samples leaving the batch when a callback says so. What is
guided, kept and shown is the caller's (:class:`~lit_featinv.module.FeatureInversion` passes the guidance, best-image
tracking and stopping)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from .sampling import alpha_bar, fork, noise_space, permute_history, renoise, step_kwargs


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
                 eta: float = 0.0, progress: Callable[[Iterable], Iterable] = iter,
                 finish_unguided: bool = False,
                 resample: Callable[[int], torch.Tensor | None] | None = None,
                 step: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run every step of ``scheduler`` (timesteps set) from ``sample``.

    ``guided(sample, t, abar, rows, w) -> (model output, image, guided_x0)`` is one guided model call for the rows
    still in the batch; ``on_iteration(Iteration)`` may return a bool mask of rows that stop now: they leave the
    batch, or with ``finish_unguided`` take this step with this iteration's output and every later step with one
    unguided call (``w`` 0, no recurrence; ``on_iteration`` still sees them); ``after_step(sample, rows, step) ->
    sample`` sees each stepped sample (e.g. to mark NaN ones); ``resample(step)``, after a step's first iteration,
    may return each row's new parent (particles: the rows take their parents' samples, outputs and scheduler history,
    and keep their own generators); ``step(scheduler, output, t, sample, gens, i) -> sample`` takes the i-th step
    instead of the scheduler's plain ``step`` (e.g. to weigh it too). Each sample's noise comes from its own generator.
    Returns the final samples of the rows left, and those rows.
    """
    rows = torch.arange(len(sample), device=sample.device)
    coast = torch.zeros(len(sample), dtype=torch.bool, device=sample.device)  # finishing unguided
    space = noise_space(scheduler)
    for i, t in enumerate(progress(scheduler.timesteps)):
        abar, abar_prev = alpha_bar(scheduler, i).to(sample), alpha_bar(scheduler, i + 1).to(sample)
        # pure noise (abar 0) has no x0 to guide, and re-noising to it draws fresh noise: one unguided iteration
        w, iterations = (weight(i), iterations_at(i)) if abar > 0 else (0.0, 1)
        output, done = torch.zeros_like(sample), coast.clone()  # done: this step's output is fixed
        for k in range(iterations):
            act = ~done
            if not act.any():
                break
            out, image, guided_x0 = guided(sample[act], t, abar, rows[act], w)
            output[act] = out
            leave = on_iteration(Iteration(i, k, t, w, rows[act], image, guided_x0)) if on_iteration else None
            parents = resample(i) if resample is not None and k == 0 else None
            if parents is not None:  # particles: every row is in the batch (nothing stops)
                sample, output = sample[parents], output[parents]
                permute_history(scheduler, parents)
            if leave is not None and leave.any():
                stopped = act.nonzero().squeeze(1)[leave]
                if finish_unguided:
                    done[stopped] = True
                else:
                    keep = torch.ones_like(act)
                    keep[stopped] = False
                    rows, sample, output, coast, done = rows[keep], sample[keep], output[keep], coast[keep], done[keep]
                    gens = [g for g, kept in zip(gens, keep.tolist()) if kept]
                    if not len(rows):
                        return sample, rows
            if k < iterations - 1 and (~done).any():  # a step and back to t, in the sample's own space
                act, stepper = ~done, fork(scheduler)
                own = [g for g, a in zip(gens, act.tolist()) if a]
                stepped = stepper.step(output[act], t, sample[act], **step_kwargs(stepper, own, eta=eta)).prev_sample
                sample = sample.clone()
                sample[act] = renoise(stepped, abar, abar_prev, own, space)
                if after_step is not None:
                    sample = after_step(sample, rows, i)
        if coast.any():  # the rows that stopped at an earlier step: one unguided call
            out, image, guided_x0 = guided(sample[coast], t, abar, rows[coast], 0.0)
            output[coast] = out
            if on_iteration:
                on_iteration(Iteration(i, 0, t, 0.0, rows[coast], image, guided_x0))
        if step is None:
            sample = scheduler.step(output, t, sample, **step_kwargs(scheduler, gens, eta=eta)).prev_sample
        else:
            sample = step(scheduler, output, t, sample, gens, i)
        coast = done
        if after_step is not None:
            sample = after_step(sample, rows, i)
    return sample, rows
