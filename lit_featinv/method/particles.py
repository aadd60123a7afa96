"""A sampler that follows the posterior: the generations of a target are particles of a sequential Monte Carlo
sampler (Feynman-Kac steering, Singhal et al. 2025, arXiv 2501.06848), weighted by potentials on the clean estimate's
feature loss and resampled per target, so that the saved generations sample the tilted distribution
p(x) exp(-lam * loss(f(x), f*)) (exactly as the particles grow, with an exact proposal), not a heuristic's.

The proposal is the guided loop as configured (its guidance, w and K; w = 0, K = 1 and a stochastic step, DDPM or DDIM with
eta > 0: the prior's own steps, and then the particles sample p(x) exp(-lam loss) exactly as they grow; a
deterministic step would keep a resampled particle's copies identical). With guidance, the weights do not correct the guided
step against the prior's (as FK steering with a guided proposal): the particles then sample the guided process's
distribution tilted by the potentials, closer to the target than the guided process alone.
"""
from __future__ import annotations

import math
import warnings

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..errors import ConfigError
from ..models.mixture import row_space
from .sampling import alpha_bar, fork, noise_space, signal_noise, step_kwargs

POTENTIALS = ("difference", "max", "sum")
FINALS = ("resample", "weights")


def systematic(weights: torch.Tensor, count: int, u: float) -> torch.Tensor:
    """Systematic resampling: ``count`` indices into ``weights`` [P] (normalised), one uniform ``u`` in [0, 1)."""
    edges = torch.cumsum(weights.double(), 0)
    edges[-1] = 1.0
    points = (u + torch.arange(count, dtype=torch.float64, device=weights.device)) / count
    return torch.searchsorted(edges, points, right=True).clamp(max=len(weights) - 1)


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    """The effective sample size of each row of log weights [G, P], as a fraction of P: 1 / (P sum w^2)."""
    w = torch.softmax(log_weights.double(), dim=-1)
    return 1 / (log_weights.shape[-1] * (w ** 2).sum(-1))


def collapsed(lowest: float, particles: int) -> bool:
    """Whether a target's particles collapsed onto one at some step: its lowest effective sample size (a fraction of
    ``particles``, :func:`ess`) x ``particles`` < 1.5."""
    return lowest * particles < 1.5


class ParticleSampler:
    """Particles with importance weights and resampling (``model.sampler``): ``particles`` generations per target run
    together, their weights multiplied at each step by a potential on the clean estimate's loss, and a target's
    particles are resampled (systematic resampling, within the target only) when their effective sample size falls
    below ``ess_threshold``. What is saved is a posterior sample: ``samples_per_target`` of the particles drawn by
    their final weights (``final: resample``), or every particle with its normalised ``weight`` in metrics.jsonl
    (``final: weights``, ``particles`` = ``samples_per_target``).

    Args:
        particles: particles per target (>= ``model.samples_per_target``).
        lam: lam >= 0 of the target p(x) exp(-lam * loss); 0: the proposal's own samples, never resampled.
        potential: FK steering's intermediate potentials on r = -loss of the clean estimate: ``difference``
            (exp(lam (r_i - r_{i-1}))), ``max`` (exp(lam max_{j <= i} r_j)) or ``sum`` (exp(lam r_i)); the final
            step's weight makes every lineage's product exp(lam r(final image)).
        ess_threshold: resample a target's particles when their effective sample size / particles < this, in (0, 1].
        final: ``resample`` or ``weights`` (above).
        correct_proposal: also weight each step by the prior's step density over the guided step's (TDS: the
            guidance shifts the step's mean; the weight is the ratio of the two Gaussians at the sample taken), so that
            a guided proposal samples the same target as the prior's own steps. Needs a stochastic step (DDPM, or DDIM
            with ``model.eta`` > 0); exact with one iteration per step (K = 1): recurrence stays an uncorrected move.
        start_step: the first step (0-based) whose potential weighs the particles and at which they may be resampled;
            before it they run as independent generations (the potentials then start from that step's loss, and
            the final weight is still exp(lam r(final image))). An early step's loss says little about which
            particle ends best (``benchmarks/results/equal-compute-screen.md``).
        relative: the potentials on each target's loss over its feature's squared norm |f*|^2 (with ``SquaredL2``:
            the relative squared error), so that one lam weighs features of any scale alike (a softmax's loss is
            below 2, a pooled feature's in the tens); false: on the loss as it is.

    Randomness: each target's resampling draws from its own generator, seeded by the run seed and the target id, so
    a target's generations are the same in any batch, any process and after a resume.
    """

    def __init__(self, particles: int = 16, lam: float = 1.0, potential: str = "difference",
                 ess_threshold: float = 0.5, final: str = "resample", correct_proposal: bool = False,
                 start_step: int = 0, relative: bool = False):
        if particles < 1:
            raise ConfigError("model.sampler.particles", f"{particles} is not a count (>= 1)")
        if not (math.isfinite(lam) and lam >= 0):
            raise ConfigError("model.sampler.lam", f"{lam} is not a number >= 0")
        if potential not in POTENTIALS:
            raise ConfigError("model.sampler.potential", f"{potential!r} is not one of {list(POTENTIALS)}")
        if not 0 < ess_threshold <= 1:
            raise ConfigError("model.sampler.ess_threshold", f"{ess_threshold} is not in (0, 1]")
        if start_step < 0:
            raise ConfigError("model.sampler.start_step", f"{start_step} is not a step index (>= 0)")
        if final not in FINALS:
            raise ConfigError("model.sampler.final", f"{final!r} is not one of {list(FINALS)}")
        self.particles, self.lam, self.potential = particles, lam, potential
        self.ess_threshold, self.final, self.correct_proposal = ess_threshold, final, correct_proposal
        self.start_step, self.relative = start_step, relative

    generates = False  # steers the guided loop (FeatureInversion.generate), does not replace it

    def check(self, saved: int, stop_cosine: float | None = None, steps: int | None = None, prior=None) -> None:
        """``saved`` generations per target can be taken from the particles (called by
        :class:`~lit_featinv.FeatureInversion`)."""
        if stop_cosine is not None:
            raise ConfigError("model.stop_cosine", "particles (model.sampler) run every step together: set "
                                                   "stop_cosine: null")
        if saved > self.particles:
            raise ConfigError("model.samples_per_target", f"{saved} saved generations from {self.particles} particles "
                                                          f"(model.sampler.particles): give at least as many particles")
        if self.final == "weights" and saved != self.particles:
            raise ConfigError("model.sampler.final", f"'weights' saves every particle with its weight: set "
                                                     f"model.samples_per_target to {self.particles} (particles), or "
                                                     f"final: resample")

    def rows(self, saved: int) -> int:
        """Generations run per target: the particles."""
        return self.particles

    def start(self, targets: int, seeds: list[int], device, features: torch.Tensor | None = None,
              extractor=None) -> "ParticleState":
        """The state of one batch: ``targets`` groups of ``particles`` rows (target-major), one generator each
        (``features`` [targets, m]: their target features, of ``extractor``)."""
        return ParticleState(self, targets, seeds, device, features)


class ParticleState:
    """The weights of one batch's particles ([targets, particles]) and what they did: the effective sample size after
    each step's reweighting, the steps at which each target was resampled, the potentials of each lineage."""

    def __init__(self, sampler: ParticleSampler, targets: int, seeds: list[int], device,
                 features: torch.Tensor | None = None):
        self.sampler, self.shape = sampler, (targets, sampler.particles)
        self.unit = torch.ones(targets, 1, dtype=torch.float64, device=device)  # what each target's loss is over
        if sampler.relative:
            self.unit = features.double().to(device).pow(2).sum(1, keepdim=True).clamp_min(1e-12)
        self.log_weights = torch.zeros(self.shape, dtype=torch.float64, device=device)
        self.accumulated = torch.zeros_like(self.log_weights)  # sum of log potentials along each lineage
        self.previous = torch.zeros_like(self.log_weights)  # r_{i-1} (difference) or max_{j<i} r_j (max)
        self.gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        self.ess: list[list[float]] = [[] for _ in range(targets)]
        self.resampled: list[list[int]] = [[] for _ in range(targets)]
        self.first = True
        self.pending = torch.zeros_like(self.log_weights)  # the last step's proposal correction, until reweighted

    @property
    def steps(self) -> bool:
        """Whether the particles take their own step (:meth:`step`) instead of the scheduler's plain one."""
        return self.sampler.correct_proposal

    @property
    def weighs(self) -> bool:
        """Whether the weights can differ (else the particles are never resampled)."""
        return self.sampler.lam > 0 or self.steps

    def step(self, scheduler, output, plain, t, sample, gens, eta: float, index: int) -> torch.Tensor:
        """The particles' step at the ``index``-th timestep ``t``: the scheduler's with the guided ``output``, weighed
        against the prior's own (``plain``) in the next reweighting (:func:`corrected_step`)."""
        sample, log_ratio = corrected_step(scheduler, output, plain, t, sample, gens, eta)
        self.pending += log_ratio.view(self.shape)
        return sample

    def reweight(self, loss: torch.Tensor, step: int | None = None) -> None:
        """Multiply the weights by the potentials of the particles' losses [targets * particles] at ``step`` (NaN:
        the particle gets weight 0; before the sampler's ``start_step``, only that)."""
        lam, kind = self.sampler.lam, self.sampler.potential
        r = -loss.double().view(self.shape) / self.unit
        bad = ~torch.isfinite(r)
        new = int((bad & torch.isfinite(self.log_weights)).sum())
        if new:
            warnings.warn(f"model.sampler: {new} particle(s) became NaN or Inf (the network, decoder or loss "
                          f"overflowed): weight 0, their targets' other particles go on")
        r = torch.where(bad, torch.zeros_like(r), r)
        if step is not None and step < self.sampler.start_step:  # not weighed yet: only a NaN particle's weight 0
            self.log_weights = self.log_weights.masked_fill(bad, -math.inf)
            return
        if kind == "difference":
            increment, self.previous = lam * (r - self.previous), r
        elif kind == "max":
            best = r if self.first else torch.maximum(self.previous, r)
            increment, self.previous = lam * best, best
        else:
            increment = lam * r
        self.first = False
        self.accumulated += increment
        self.log_weights += increment + self.pending
        self.pending.zero_()
        self.log_weights = self.log_weights.masked_fill(bad, -math.inf)

    def finish(self, loss: torch.Tensor) -> None:
        """The final reweighting: each lineage's potentials become exp(lam r(final image))."""
        r = -loss.double().view(self.shape) / self.unit
        bad = ~torch.isfinite(r)
        self.log_weights += self.sampler.lam * torch.where(bad, torch.zeros_like(r), r) - self.accumulated + self.pending
        self.log_weights = self.log_weights.masked_fill(bad, -math.inf)

    def dead(self) -> torch.Tensor:
        """Targets whose particles all have weight 0 (every one non-finite) [targets]."""
        return torch.isinf(self.log_weights).all(1)

    def record_ess(self) -> torch.Tensor:
        """Each target's effective sample size as a fraction of its particles, noted for the run's records."""
        fraction = ess(self.log_weights.masked_fill(self.dead()[:, None], 0.0))
        for target, value in enumerate(fraction.tolist()):
            self.ess[target].append(round(value, 6))
        return fraction

    def resample(self, step: int, force: bool = False) -> torch.Tensor | None:
        """Row indices [targets * particles] (each row's new parent, within its target) where a target's effective
        sample size fell below the threshold (``force``: every target), its weights then equal; None: none did."""
        fraction = self.record_ess()
        due = ((fraction < self.sampler.ess_threshold) & (step >= self.sampler.start_step)) | force
        due &= ~self.dead()
        if not self.weighs or not due.any():
            return None
        targets, count = self.shape
        index = torch.arange(targets * count, device=self.log_weights.device).view(targets, count)
        for target in due.nonzero().flatten().tolist():
            u = float(torch.rand(1, generator=self.gens[target], dtype=torch.float64))
            w = torch.softmax(self.log_weights[target], 0)
            index[target] = target * count + systematic(w, count, u)
            self.resampled[target].append(step)
        self.log_weights[due] = 0.0
        flat = index.flatten()
        for state in (self.accumulated, self.previous, self.pending):
            state.copy_(state.flatten()[flat].view(self.shape))
        return flat

    def choose(self, saved: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The particles to save per target [targets, saved] (row indices) and their normalised weights."""
        targets, count = self.shape
        logw = self.log_weights.masked_fill(self.dead()[:, None], 0.0)
        if self.sampler.final == "weights":
            rows = torch.arange(targets * count).view(targets, count)
            return rows, torch.softmax(logw, 1).float().cpu()
        rows = torch.stack([target * count + systematic(torch.softmax(logw[target], 0).cpu(), saved,
                                                         float(torch.rand(1, generator=self.gens[target],
                                                                          dtype=torch.float64)))
                            for target in range(targets)])
        return rows, torch.full((targets, saved), 1 / saved)

    def select(self, out: dict, saved: int) -> tuple[list[int], dict, list[dict]]:
        """From :meth:`FeatureInversion.generate`'s per-row output, the saved generations (:meth:`choose`): their rows,
        the output for them, and each one's ``weight`` and its target's ``particles`` record (the ESS after each step,
        the steps it was resampled at, which particle it is). A saved generation's ``nfe`` and ``unet_backward`` are
        its target's particles' total over ``saved``: what one saved generation cost."""
        chosen, weights = self.choose(saved)
        pick, (targets, count) = chosen.flatten(), self.shape
        cost = {key: (out[key].view(targets, count).sum(1).double() / saved).round().long().repeat_interleave(saved)
                for key in ("nfe", "unet_backward")}
        out = {k: cost[k] if k in cost else [v[r] for r in pick.tolist()] if isinstance(v, list)
               else v[pick.to(v.device)] for k, v in out.items()}
        extra = [{"weight": float(weights[n, j]), "particles": {"index": int(chosen[n, j]) % count,
                                                                "ess": self.ess[n], "resampled": self.resampled[n]}}
                 for n in range(targets) for j in range(saved)]
        return pick.tolist(), out, extra


class LinearParticleSampler(ParticleSampler):
    """MCGdiff (Cardoso et al. 2023, arXiv 2308.07983; noiseless): particles that sample p(x | A x = y), exactly as
    they grow, for a linear feature (``lit_featinv.LinearExtractor``) of a prior whose samples are the images (pixel
    space; the mixture world). In the basis of A's row space (A = U S V^T: measured coordinates xbar = V^T x, their
    target ybar = S^-1 U^T y), each step is the prior's own (the model's output as the loop hands it: ``w`` 0 for the
    prior's, ``recurrence`` 1 for the exact sampler), except that the measured coordinates are drawn from the step's
    Gaussian N(m, sigma^2) times the target noised to the new level, N(a ybar, s^2) (x = a x0 + s eps), and each
    particle is weighted by N(a ybar; m, sigma^2 + s^2) / N(a_t ybar; xbar_t, s_t^2) (the first step: the
    numerator). The last step (s = 0) sets them to ybar, A x = y exactly; when it adds no noise (DDPM's, DDIM's to
    abar 1) it keeps the weights of the last level. Needs steps that add noise (DDPM, DDIM with ``model.eta`` > 0).
    The weights' variance grows with the measured dimensions: on a 16-d mixture with a 2-d feature the mean is
    within 0.035 of the posterior's at 4,000-8,000 particles; with 512-1,024 measured pixels of 1,024 and 32-128
    particles the saved generations descend from one lineage (``benchmarks/results/posterior-linear.md``).

    Args:
        particles, ess_threshold, final: as :class:`ParticleSampler` (no potentials: lam 0).
        rtol: singular values of A below ``rtol`` x the largest are its null space.
    """

    def __init__(self, particles: int = 16, ess_threshold: float = 0.5, final: str = "resample", rtol: float = 1e-6):
        super().__init__(particles, lam=0.0, ess_threshold=ess_threshold, final=final)
        self.rtol = rtol

    def start(self, targets, seeds, device, features=None, extractor=None) -> "LinearState":
        return LinearState(self, targets, seeds, device, features, extractor)


def log_normal(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, var I) per row of [N, r] (var [N]); 0 where var is 0 (a point mass: no weight)."""
    safe = torch.where(var > 0, var, torch.ones_like(var))
    value = -0.5 * (((x - mean) ** 2).sum(1) / safe + x.shape[1] * torch.log(2 * math.pi * safe))
    return torch.where(var > 0, value, torch.zeros_like(value))


class LinearState(ParticleState):
    """:class:`ParticleState` of :class:`LinearParticleSampler`: A's row space (``basis`` [D, r], orthonormal) and
    each target's measured coordinates (``measured`` [targets, r])."""

    steps = True

    def __init__(self, sampler: LinearParticleSampler, targets, seeds, device, features, extractor):
        super().__init__(sampler, targets, seeds, device)
        matrix = getattr(extractor, "matrix", None)
        if matrix is None:
            raise ConfigError("model.extractor", f"{type(extractor).__name__} is not linear: "
                                                 f"lit_featinv.LinearParticleSampler (model.sampler) needs "
                                                 f"lit_featinv.LinearExtractor")
        matrix = matrix.double() if extractor.select is None else matrix.double()[extractor.select]
        basis, measured = row_space(matrix, features.double().to(matrix.device), sampler.rtol)
        self.basis, self.measured = basis.T.to(device), measured.to(device)

    def step(self, scheduler, output, plain, t, sample, gens, eta: float, index: int) -> torch.Tensor:
        if sample[0].numel() != len(self.basis):
            raise ConfigError("model.sampler", f"the prior's samples have {sample[0].numel()} values and the "
                                               f"feature's images {len(self.basis)}: LinearParticleSampler needs a "
                                               f"prior whose samples are the images (pixel space)")
        space, device = noise_space(scheduler), sample.device
        a_t, s_t = signal_noise(alpha_bar(scheduler, index).to(device).double(), space)
        a, s = signal_noise(alpha_bar(scheduler, index + 1).to(device).double(), space)
        ybar = self.measured.repeat_interleave(self.shape[1], 0)
        taken, z, sigma = noisy_step(scheduler, output, t, sample, gens, eta)
        if index < len(scheduler.timesteps) - 1 and not (sigma > 0).all():
            raise ConfigError("model.sampler", f"{type(scheduler).__name__}'s step adds no noise: "
                                               f"LinearParticleSampler needs one that does (DDPM, or DDIM with "
                                               f"model.eta > 0)")
        flat, var = taken.flatten(1).double(), sigma ** 2
        mean = (flat - sigma[:, None] * z.flatten(1).double()) @ self.basis
        total = var + s ** 2
        gain = torch.where(total > 0, var / total.clamp_min(1e-300), torch.ones_like(total))[:, None]
        drawn = gain * a * ybar + (1 - gain) * mean + (gain * s ** 2).sqrt() * (z.flatten(1).double() @ self.basis)
        increment = log_normal(a * ybar, mean, total)
        if index > 0:  # over the potential the particle had (the first: cancelled by the initial weight)
            increment -= log_normal(a_t * ybar, sample.flatten(1).double() @ self.basis, (s_t ** 2).expand(len(flat)))
        self.pending += torch.where(total > 0, increment, torch.zeros_like(increment)).view(self.shape)
        flat = flat + (drawn - flat @ self.basis) @ self.basis.T
        return flat.view_as(taken).to(taken.dtype)


def clone(gen: torch.Generator) -> torch.Generator:
    """A generator in the same state (the next draws are the same)."""
    copy = torch.Generator(gen.device)
    copy.set_state(gen.get_state())
    return copy


def noisy_step(scheduler, output: torch.Tensor, t, sample: torch.Tensor, gens: list[torch.Generator],
               eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of ``scheduler`` with ``output`` (drawing from ``gens``) as x' = mean + sigma z: (x', z, sigma per
    sample). z and sigma are read off the scheduler's own step: z from copies of the generators, sigma from a second
    step (on a copy) with other noise (any scheduler whose step adds one Gaussian draw; 0 for a step without noise)."""
    ahead = [clone(g) for g in gens]
    other = [torch.Generator(g.device).manual_seed(int(torch.randint(2 ** 62, (1,), generator=clone(g))) + 1)
             for g in gens]
    probe = fork(scheduler).step(output, t, sample, **step_kwargs(scheduler, [clone(g) for g in other], eta=eta))
    taken = scheduler.step(output, t, sample, **step_kwargs(scheduler, gens, eta=eta)).prev_sample
    z = randn_tensor(output.shape, generator=ahead, device=output.device, dtype=output.dtype)
    z_other = randn_tensor(output.shape, generator=other, device=output.device, dtype=output.dtype)
    dims = tuple(range(1, output.ndim))
    gap, dz = (taken - probe.prev_sample).double(), (z - z_other).double()
    sigma = (gap * dz).sum(dims) / (dz * dz).sum(dims)  # taken - probe = sigma (z - z_other)
    return taken, z, sigma.clamp_min(0)


def corrected_step(scheduler, output: torch.Tensor, plain: torch.Tensor, t, sample: torch.Tensor,
                   gens: list[torch.Generator], eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of ``scheduler`` with the guided ``output`` (drawing from ``gens``), and per sample the log density
    ratio log p(x'|x) - log q(x'|x) of the prior's step (the model's own output ``plain``) over the guided one at the
    sample x' taken. Both steps add sigma z (z ~ N(0, I), one draw; :func:`noisy_step`): the guidance shifts the mean
    by d, and the ratio is -(d . z) / sigma - |d|^2 / (2 sigma^2); a step without noise (sigma 0) gets 0."""
    plain_step = fork(scheduler).step(plain, t, sample, **step_kwargs(scheduler, [clone(g) for g in gens], eta=eta))
    taken, z, sigma = noisy_step(scheduler, output, t, sample, gens, eta)
    dims = tuple(range(1, output.ndim))
    shift = (taken - plain_step.prev_sample).double()  # the guided mean minus the prior's (same noise)
    noisy = sigma > 1e-12
    safe = torch.where(noisy, sigma, torch.ones_like(sigma))
    log_ratio = -(shift * z.double()).sum(dims) / safe - (shift * shift).sum(dims) / (2 * safe ** 2)
    return taken, torch.where(noisy, log_ratio, torch.zeros_like(log_ratio))
