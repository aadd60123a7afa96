"""The feature decoder: a LightningModule whose ``predict_step`` runs the guided reverse diffusion loop
(:func:`~lit_featinv.method.loop.reverse_loop`) on each batch of targets."""
from __future__ import annotations

import math
import os
import time
from functools import partial

import torch
from diffusers.utils.torch_utils import randn_tensor
from jsonargparse import lazy_instance
from lightning.pytorch import LightningModule
from tqdm.auto import tqdm

from .config import build, check_renamed_keywords
from .errors import ConfigError
from .method.guidance import Guidance, UNetGradient
from .method.loop import Iteration, reverse_loop
from .method.losses import FeatureLoss, SquaredL2
from .method.measure import metrics, to_uint8, track_best
from .method.noise_optimization import NoiseOptimization
from .method.particles import ParticleSampler
from .method.records import BestImage, Trajectory, defined
from .method.sampling import check_timesteps, fork, generators, model_input, prediction_type, sample_seed
from .method.schedules import per_step
from .method.targets import check_feature_size, check_text_targets, target_features
from .method.trust import PriorScore, check_generations
from .models.extractors import FeatureExtractor
from .models.priors import DiffusionPrior
from .runs.data import collate
from .runs.results import Inversion, check_output_type, inversion
from .runs.signals import STOP
from .runs.sources import target_items


class RefusesRenamed:
    """A keyword by its old name (:data:`lit_featinv.config.RENAMED`) stops in one line, before ``__init__`` runs.
    A base class after the module's own, so that ``inspect`` and jsonargparse read the parameters of ``__init__``."""

    def __new__(cls, *args, **kwargs):
        check_renamed_keywords(kwargs, cls.__name__)
        return super().__new__(cls)


class FeatureInversion(LightningModule, RefusesRenamed):
    """Generate images whose features match target features by guiding a frozen diffusion prior.

    Nothing is trained: every network is frozen. The guidance changes the model's prediction
    (eps_tilde = eps + w * rescaled, clipped gradient of the loss); the step is the scheduler's own.
    Build it from a preset, a config file or a dict (:meth:`from_config`) or from objects; call it on images,
    features or prompts (:meth:`forward`), or run it with a Trainer's ``predict`` (``lit-featinv predict``).

    Args:
        prior: the diffusion prior (UNet, scheduler, decoder).
        extractor: the network and layer whose feature is matched (and measured).
        loss: distance to minimise (default: squared Euclidean, as in the paper).
        guidance: how the prediction is guided: :class:`~lit_featinv.UNetGradient` (the paper's, default) or
            :class:`~lit_featinv.CleanEstimateGradient` (no UNet backward), with w and its schedule.
        num_inference_steps: scheduler steps.
        recurrence: self-recurrence K: guided iterations per step (re-noising between them); one value, one per
            step, or pieces {from step: K}.
        early_steps, early_recurrence: the first ``early_steps`` steps use ``early_recurrence`` iterations (the
            paper's early-step emphasis; the same as pieces ``{0: early_recurrence, early_steps: recurrence}``).
        samples_per_target: generations per target, each with its own seed.
        seed: run seed; a generation's noise depends only on (seed, sample id, generation index).
        eta: DDIM's eta (ignored by schedulers that take none).
        best_from_guided: also score the clean estimate recomputed from the guided noise as a best-image candidate,
            beside the estimate before guidance (the authors' choice; one more decode and network forward per
            iteration).
        stop_cosine: a generation whose estimate (as saved) reaches this cosine to its target stops there, that
            estimate its final image (finish_unguided: it finishes unguided; null: no stop). Matching losses only.
        finish_unguided: a generation that reaches ``stop_cosine`` stays in the batch and finishes its remaining steps
            unguided (one model forward per step, no recurrence, no backward), so its final image is a finished
            sample rather than a mid-trajectory estimate; its best image is still tracked.
        progress: show a progress bar over the steps of each batch (on stderr; not under a Trainer whose progress bar
            is off: ``trainer.enable_progress_bar: false`` turns every bar off).
        prior_score: how typical each saved image is of the prior (:class:`~lit_featinv.method.trust.PriorScore`,
            ``prior_score`` in its metrics; lower is more typical): on by default, ``steps * draws`` denoiser forwards
            per image, no backward; null: off (``prior_score: null`` in the metrics).
        checks: other networks measured on each generation against its target image (``checks`` in its metrics:
            per name the cosine of their features, for ``check_classifiers`` also whether the top-1 class agrees);
            null for targets without an image.
        check_classifiers: the names in ``checks`` whose features are class scores (logits or probabilities).
        sampler: null: each generation on its own (the paper's); a :class:`~lit_featinv.method.particles.ParticleSampler`
            (``lit_featinv.ParticleSampler``): a target's generations are particles, weighted by potentials on their
            loss and resampled, so that the saved ones sample the feature's posterior; or
            :class:`~lit_featinv.method.noise_optimization.NoiseOptimization`: each generation's initial noise
            optimised through the plain sampler instead of guidance (few-step priors).

    Best-image candidates are scored as they will be saved (clamped, 8-bit) with float32 features, whatever the
    Trainer's precision; so are targets and the reported metrics.
    """

    def __init__(self, prior: DiffusionPrior, extractor: FeatureExtractor, loss: FeatureLoss | None = None,
                 guidance: Guidance | None = None, num_inference_steps: int = 50,
                 recurrence: int | list[int] | dict[int | str, int] = 8, early_steps: int = 0,
                 early_recurrence: int = 1, samples_per_target: int = 1, seed: int = 0, eta: float = 0.0,
                 best_from_guided: bool = False, stop_cosine: float | None = None, finish_unguided: bool = False,
                 progress: bool = True, prior_score: PriorScore | None = lazy_instance(PriorScore),
                 checks: dict[str, FeatureExtractor] | None = None, check_classifiers: list[str] | None = None,
                 sampler: ParticleSampler | NoiseOptimization | None = None):
        super().__init__()
        for key, value in (("early_recurrence", early_recurrence), ("samples_per_target", samples_per_target),
                           ("num_inference_steps", num_inference_steps), ("early_steps", early_steps + 1)):
            if value < 1:
                raise ConfigError(f"model.{key}", f"{value if key != 'early_steps' else early_steps} is not a count "
                                                  f"(>= {0 if key == 'early_steps' else 1})")
        self.iterations = per_step(recurrence, num_inference_steps, "model.recurrence")
        for k in self.iterations:
            if not isinstance(k, int) or k < 1:
                raise ConfigError("model.recurrence", f"{k} is not a count (>= 1)")
        self.iterations[:early_steps] = [early_recurrence] * min(early_steps, num_inference_steps)
        if not math.isfinite(eta) or eta < 0:
            raise ConfigError("model.eta", f"{eta} is not a number >= 0")
        if stop_cosine is not None and not -1 < stop_cosine <= 1:
            raise ConfigError("model.stop_cosine", f"{stop_cosine} is not a cosine in (-1, 1]")
        if finish_unguided and stop_cosine is None:
            raise ConfigError("model.finish_unguided", "finishes the generations that reach model.stop_cosine: set "
                                                       "a stop_cosine too")
        if sampler is not None:
            sampler.check(samples_per_target, stop_cosine, num_inference_steps, prior)
        self.sampler = sampler
        self.prior, self.extractor, self.loss = prior, extractor, loss or SquaredL2()
        history = [a for a in ("ets", "model_outputs", "derivatives", "prev_derivative") if hasattr(prior.scheduler, a)]
        if stop_cosine is not None and history:
            raise ConfigError("model.stop_cosine", f"{type(prior.scheduler).__name__} keeps earlier outputs per sample "
                                                   f"({history[0]}), so samples cannot leave the batch; use a one-step "
                                                   f"scheduler (DDIM, DDPM, Euler) or stop_cosine: null")
        kind = prediction_type(prior.scheduler)
        if prior.prediction is not None and kind != prior.prediction:
            raise ConfigError("model.prior.scheduler", f"{type(prior.scheduler).__name__} steps {kind} outputs, but "
                                                       f"{type(prior).__name__}'s model predicts {prior.prediction}: "
                                                       f"take a scheduler for it (e.g. diffusers."
                                                       f"FlowMatchEulerDiscreteScheduler for flow matching)")
        self.guidance = guidance or UNetGradient()
        self.guidance.check(num_inference_steps, prior)
        self.num_inference_steps, self.stop_cosine = num_inference_steps, stop_cosine
        self.finish_unguided = finish_unguided
        self.recurrence, self.early_steps, self.early_recurrence = recurrence, early_steps, early_recurrence  # as given
        self.samples_per_target, self.seed, self.eta, self.progress = samples_per_target, seed, eta, progress
        self.best_from_guided = best_from_guided
        unknown = sorted(set(check_classifiers or ()) - set(checks or {}))
        if unknown:
            raise ConfigError("model.check_classifiers", f"{unknown} are not names in model.checks "
                                                         f"({sorted(checks or {})})")
        self.prior_score, self.checks = prior_score, torch.nn.ModuleDict(checks or {})
        self.check_classifiers = set(check_classifiers or ())
        if prior_score is not None:
            prior_score.schedule(prior)  # a schedule it cannot make stops here
        check_timesteps(fork(prior.scheduler), num_inference_steps, schedule=prior.schedule_kwargs(num_inference_steps))
        self.requires_grad_(False)
        self.feature_dim: int | None = None

    # ---- Python calls ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: str | os.PathLike | dict = "quickstart", **init_args) -> "FeatureInversion":
        """A decoder from a preset name (``lit-featinv presets``), a config file or a dict: its ``model`` section,
        with ``init_args`` replacing keys of it (``num_inference_steps=20``). Move it with ``.to(device)``."""
        return build(config, init_args, cls)

    def forward(self, images=None, features=None, prompts=None, *, batch_size: int = 8,
                output_type: str = "pil") -> Inversion:
        """Generate ``samples_per_target`` images per target and measure them; targets from exactly one of
        ``images`` (a path, PIL image(s), a tensor [B, C, H, W] in [0, 1]), ``features`` (a tensor [N, D] or a
        .pt/.npy path) or ``prompts`` (texts, with a text-capable extractor). Returns an
        :class:`~lit_featinv.Inversion` (images as PIL, or float tensors with ``output_type="pt"``, and their
        metrics). Runs on the module's device, in batches of ``batch_size`` targets."""
        if batch_size < 1:
            raise ConfigError("batch_size", f"{batch_size} is not a number of targets (>= 1)")
        check_output_type(output_type)
        if prompts is not None:
            check_text_targets(self.extractor, "prompts")
        with torch.inference_mode(False):
            items = target_items(images, features, prompts, self.feature_dim or self.measure_feature_dim())
            records = [record for start in range(0, len(items), batch_size)
                       for record in self.predict_step(collate(items[start: start + batch_size]))]
        return inversion(records, output_type)

    # ---- overridable pieces -------------------------------------------------------------------
    def iterations_at(self, step_index: int) -> int:
        """Self-recurrence K at this step (``recurrence``'s schedule, early-step emphasis for the first
        ``early_steps``)."""
        return self.iterations[step_index]

    def to_image(self, sample: torch.Tensor) -> torch.Tensor:
        """A clean sample -> image in [0, 1] (not clamped: a clamp would zero the gradient)."""
        return (self.prior.decode(sample) + 1) / 2

    # ---- the guided loop ----------------------------------------------------------------------
    def fresh_scheduler(self):
        """A copy of the prior's scheduler set to this run's steps (schedulers keep state: one per batch)."""
        scheduler = fork(self.prior.scheduler)
        scheduler.set_timesteps(self.num_inference_steps, device=self.device,
                                **self.prior.schedule_kwargs(self.num_inference_steps))
        return scheduler

    def initial_noise(self, gens: list[torch.Generator], scheduler) -> torch.Tensor:
        """Each sample's starting noise from its own generator, at the scheduler's scale (flow matching: 1)."""
        noise = randn_tensor((len(gens), *self.prior.sample_shape), generator=gens, device=self.device,
                             dtype=torch.float32)
        return noise * getattr(scheduler, "init_noise_sigma", 1.0)

    def guided_output(self, scheduler, sample, t, abar, target, w: float, plain: bool = False):
        """One guided model call at timestep t, signal level abar: (guided model output, clean estimate before
        guidance as an image in [0, 1], clean estimate from the guided noise (a sample, not decoded)), and with
        ``plain`` the model's own output."""
        objective = lambda image: self.loss(self.extractor(image), target)  # noqa: E731
        return self.guidance(self.prior.denoise, self.to_image, objective, model_input(scheduler, sample, t), t, abar,
                             prediction_type(scheduler), w, plain)

    def generate(self, target: torch.Tensor, seeds: list[int], groups: list[int] | None = None) -> dict:
        """Guided reverse diffusion for targets [B, D] -> final image in [0, 1], best image (uint8, as saved), and
        their bookkeeping (per sample: best step, UNet evaluations and backward passes, step it failed or stopped at,
        -1: never; its trajectory, :class:`~lit_featinv.method.records.Trajectory`). With ``model.sampler``, the rows
        are ``len(groups)`` targets' particles (target-major; ``groups``: each target's resampling seed), and
        ``particles`` says which to save (:meth:`~lit_featinv.method.particles.ParticleState.choose`)."""
        if self.sampler is not None and self.sampler.generates:  # another way of generating: not the guided loop
            return self.sampler.generate(self, target, seeds, STOP.check)
        gens = generators(seeds)
        state = self.sampler.start(len(groups), groups, self.device, target[::self.sampler.particles],
                                   self.extractor) if self.sampler is not None else None
        scheduler = self.fresh_scheduler()
        sample = self.initial_noise(gens, scheduler)
        best, final, trajectory = BestImage(), [None] * len(seeds), Trajectory(len(seeds))
        nfe, backward = (torch.zeros(len(seeds), dtype=torch.long) for _ in range(2))
        failed, stopped = (torch.full((len(seeds),), -1, device=self.device) for _ in range(2))

        correct, last = state is not None and self.sampler.correct_proposal, {}

        def guided(sample, t, abar, rows, w):
            STOP.check()  # a stop signal ends the run here, between two guided iterations
            if not correct:
                return self.guided_output(scheduler, sample, t, abar, target[rows], w)
            *out, last["plain"] = self.guided_output(scheduler, sample, t, abar, target[rows], w, plain=True)
            return out

        def step(scheduler, output, t, sample, gens, i):  # the particles' own step (weighed)
            return state.step(scheduler, output, last.get("plain"), t, sample, gens, self.eta, i)

        def on_iteration(it: Iteration) -> torch.Tensor | None:
            """Best-image candidates scored; samples that reached ``stop_cosine`` keep this estimate and leave."""
            candidates = [it.image]
            if self.best_from_guided and it.w != 0:
                with torch.no_grad():
                    candidates.append(self.to_image(it.guided_x0))
            loss, cosine = track_best(self.extractor, self.loss, best, candidates, target[it.rows], it.step, it.rows)
            trajectory.add(it.step, it.k, it.rows, loss, cosine)
            nfe[it.rows.cpu()] += 1
            backward[it.rows.cpu()] += int(it.w != 0 and self.guidance.through_unet)
            if state is not None and it.k == 0:  # a particle that failed (NaN) gets weight 0
                state.reweight(loss.masked_fill(failed[it.rows] >= 0, math.nan), it.step)
            if self.stop_cosine is None:
                return None
            done = (cosine >= self.stop_cosine) & (stopped[it.rows] < 0)
            for r, image in zip(it.rows[done].tolist(), it.image[done]):
                final[r], stopped[r] = image, it.step  # finishing unguided: the loop's final image replaces it
            return done

        def after_step(sample, rows, step):
            return self.drop_nonfinite(sample, failed, step, rows)

        trainer = self._trainer  # a Trainer without its progress bar (enable_progress_bar: false) shows none of ours
        shown = self.progress and self.global_rank == 0 and (trainer is None or trainer.progress_bar_callback is not None)
        bar = partial(tqdm, desc="guided steps", leave=False, disable=not shown)

        def resample(step):
            parents = state.resample(step)
            if parents is not None:  # a row takes its parent's lineage: its best image and whether it failed
                best.take(parents)
                failed.copy_(failed[parents])
                last.update({k: v[parents] for k, v in last.items()})
            return parents

        sample, rows = reverse_loop(guided, scheduler, sample, gens, self.iterations_at, self.guidance.weight,
                                    on_iteration, after_step, eta=self.eta, progress=bar,
                                    finish_unguided=self.finish_unguided, resample=resample if state else None,
                                    step=step if state is not None and state.steps else None)
        if len(rows):
            with torch.no_grad():
                image = self.to_image(sample)
            loss, cosine = track_best(self.extractor, self.loss, best, [image], target[rows], len(scheduler.timesteps),
                                      rows)
            trajectory.add(len(scheduler.timesteps), 0, rows, loss, cosine)
            for r, img in zip(rows.tolist(), image):
                final[r] = img
            if state is not None:
                state.finish(loss.masked_fill(failed[rows] >= 0, math.nan))
        return {"image": torch.stack(final), "best_image": best.image, "best_step": best.step, "nfe": nfe,
                "unet_backward": backward, "failed_step": failed, "stop_step": stopped,
                "trajectory": trajectory.per_sample(), "particles": state}

    @staticmethod
    def drop_nonfinite(sample: torch.Tensor, failed: torch.Tensor, step: int, rows: torch.Tensor) -> torch.Tensor:
        """Mark samples that became NaN/Inf at ``step`` in ``failed`` (their generation fails) and zero them so the
        batch goes on."""
        bad = ~torch.isfinite(sample).flatten(1).all(1)
        if not bad.any():
            return sample
        failed[rows[bad & (failed[rows] < 0)]] = step
        return torch.where(bad.view(-1, *[1] * (sample.ndim - 1)), torch.zeros_like(sample), sample)

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> list[dict]:
        """Generate ``samples_per_target`` images per target of the batch; one record per generated image.

        A record's ``status`` is ``ok``, ``nonfinite`` (the sample became NaN/Inf at ``failed_step``: no image) or
        ``unreadable`` (the target image could not be decoded: nothing generated)."""
        start = time.perf_counter()
        errors = batch.get("error") or [None] * len(batch["id"])
        records = [{"id": i, "source": src, "status": "unreadable", "error": err}
                   for i, src, err in zip(batch["id"], batch["source"], errors) if err is not None]
        keep = [n for n, err in enumerate(errors) if err is None]
        if not keep:
            return records
        batch = {key: [value[n] for n in keep] if isinstance(value, list) else value for key, value in batch.items()}
        target = target_features(self.extractor, batch, self.device, self.feature_dim)
        rows, seeds, out, extra = self.generations(batch["id"], target)
        expanded = target[[n for n, _ in rows]]
        final, best = to_uint8(out["image"]), out["best_image"]
        scores, best_scores = (metrics(self.extractor, self.loss, images, expanded) for images in (final, best))
        target_images = [None if image is None else to_uint8(image[None])[0] for image in batch["image"]]  # as saved
        trust = self.trust(final, [target_images[n] for n, _ in rows])
        seconds = (time.perf_counter() - start) / len(rows)
        for r, (n, j) in enumerate(rows):
            failed_step = int(out["failed_step"][r])
            record = {"id": batch["id"][n], "sample": j, "seed": seeds[r], "source": batch["source"][n],
                      "status": "ok" if failed_step < 0 else "nonfinite", "target_image": None}
            nfe = int(out["nfe"][r])
            if failed_step >= 0:
                records.append(record | {"failed_step": failed_step, "metrics": {"nfe": nfe, "prior_score": None,
                                                                                "checks": None}})
                continue
            values = {k: defined(float(v[r])) for k, v in scores.items()}
            values |= {f"best_{k}": defined(float(v[r])) for k, v in best_scores.items()}
            values |= {"best_step": int(out["best_step"][r]), "nfe": nfe,
                       "unet_backward": int(out["unet_backward"][r]), "seconds": round(seconds, 3), **trust[r],
                       **extra[r]}
            if int(out["stop_step"][r]) >= 0:
                values["stop_step"] = int(out["stop_step"][r])
            records.append(record | {"image": final[r].cpu(), "best_image": best[r].cpu(), "metrics": values,
                                     "trajectory": out["trajectory"][r], "target_image": target_images[n]})
        return records

    def generations(self, ids: list[str], target: torch.Tensor) -> tuple[list, list[int], dict, list[dict]]:
        """Generate the targets [N, D] of a batch: the saved generations' (target, index) pairs, their seeds,
        :meth:`generate`'s output for them and their further metrics. With ``model.sampler``, ``particles`` rows per
        target run and ``samples_per_target`` of them are saved (:class:`~lit_featinv.method.particles.ParticleSampler`),
        each with its ``weight`` and its target's ``particles`` record; a saved generation's ``nfe`` and
        ``unet_backward`` are its target's total over the saved count."""
        per = self.sampler.rows(self.samples_per_target) if self.sampler is not None else self.samples_per_target
        rows = [(n, j) for n in range(len(ids)) for j in range(per)]
        seeds = [sample_seed(self.seed, ids[n], j) for n, j in rows]
        groups = [sample_seed(self.seed, i, -1) for i in ids] if self.sampler is not None else None
        out = self.generate(target[[n for n, _ in rows]], seeds, groups)
        state = out.pop("particles", None)
        if state is None:
            return rows, seeds, out, [{} for _ in rows]
        pick, out, extra = state.select(out, self.samples_per_target)
        saved = [(n, j) for n in range(len(ids)) for j in range(self.samples_per_target)]
        return saved, [seeds[r] for r in pick], out, extra

    def trust(self, saved: torch.Tensor, targets: list[torch.Tensor | None]) -> list[dict]:
        """Per generation (uint8 images as saved, each one's target image or None): ``prior_score`` and ``checks``
        (:mod:`lit_featinv.method.trust`; None where off or, for checks, where the target has no image)."""
        scores = self.prior_score(self.prior, saved).tolist() if self.prior_score is not None else [None] * len(saved)
        checked = check_generations(dict(self.checks), self.check_classifiers, saved, targets)
        return [{"prior_score": score, "checks": check} for score, check in zip(scores, checked)]

    def setup(self, stage: str) -> None:
        """Under a Trainer with ``inference_mode=True`` (its default), predict runs under ``torch.no_grad`` instead:
        the guidance needs gradients (``torch.inference_mode`` forbids them)."""
        if stage == "predict" and self._trainer is not None:
            self._trainer.predict_loop.inference_mode = False

    @torch.no_grad()
    def measure_feature_dim(self) -> int:
        """The extractor's feature size (on a blank image of the prior's size), to check feature targets early."""
        image = self.to_image(torch.zeros(1, *self.prior.sample_shape, device=self.device))
        self.feature_dim = self.extractor.measure(image).shape[1]
        return self.feature_dim

    def on_predict_start(self) -> None:
        if torch.is_inference_mode_enabled():
            raise ConfigError("trainer.inference_mode", "lit_featinv needs gradients in predict: set it false "
                                                        "(Trainer(inference_mode=False)); `lit-featinv predict` does")
        self.measure_feature_dim()  # to check feature-file targets before any work
        trainer = self._trainer
        if trainer is None:
            return
        for item in getattr(trainer.datamodule, "items", None) or []:  # every feature-file target, before any work
            if item.get("feature") is not None:
                check_feature_size(item["feature"], item["source"], self.feature_dim)
        if trainer.world_size > 1 and trainer._accelerator_connector.use_distributed_sampler:
            raise ConfigError("trainer.use_distributed_sampler", "must be false with several processes: "
                                                                 "TargetData gives each rank its own batches")
