"""A Gaussian-mixture world where everything is known in closed form: the mixture as a diffusion prior with its exact
denoiser (:class:`GaussianMixturePrior`), and its exact posterior under a linear feature A x = A t
(:meth:`GaussianMixture.condition`), the reference a sampler's generations are measured against.

The mixture lives on flattened samples x [D] (row-major): p(x) = sum_k w_k N(mu_k, F_k F_k^T + s_k^2 I), each
covariance a low-rank factor F_k [D, r] plus an isotropic floor s_k. Noised to signal level abar (x_t = sqrt(abar) x +
sqrt(1 - abar) eps) it stays a mixture: N(sqrt(abar) mu_k, abar F_k F_k^T + (abar s_k^2 + 1 - abar) I), whose score
is closed-form (Woodbury for the inverses), so the noise prediction eps(x_t) = -sqrt(1 - abar) grad log p_abar(x_t)
is exact (Tweedie), batched and differentiable.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .loading import check_source
from .priors import DiffusionPrior, load_scheduler

MIXTURE_FILE, CONFIG_FILE = "gmm.safetensors", "config.json"
TENSORS = ("weights", "means", "factors", "noise_std")  # exactly what gmm.safetensors holds


class GaussianMixture(nn.Module):
    """p(x) = sum_k weights[k] N(means[k], factors[k] factors[k]^T + noise_std[k]^2 I) on x [D].

    Args:
        weights: [K], summing to 1.
        means: [K, D].
        factors: [K, D, r].
        noise_std: [K], > 0.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, factors: torch.Tensor, noise_std: torch.Tensor):
        super().__init__()
        for name, value in zip(TENSORS, (weights, means, factors, noise_std)):
            self.register_buffer(name, value.double())
        self.register_buffer("gram", self.factors.transpose(1, 2) @ self.factors)  # F_k^T F_k [K, r, r]

    @classmethod
    def load(cls, path: str | Path, key: str = "model.prior.pretrained") -> "GaussianMixture":
        """From a ``gmm.safetensors`` file (:data:`TENSORS`), its shapes checked; errors name ``key``."""
        from safetensors.torch import load_file
        tensors = load_file(str(path))
        missing = [name for name in TENSORS if name not in tensors]
        if missing:
            raise ConfigError(key, f"{path} has no tensor {missing[0]!r} (a mixture holds {', '.join(TENSORS)})")
        w, mu, f, s = (tensors[name] for name in TENSORS)
        k, d = mu.shape if mu.ndim == 2 else (None, None)
        if w.shape != (k,) or f.ndim != 3 or f.shape[:2] != (k, d) or s.shape != (k,):
            raise ConfigError(key, f"{path}: shapes weights {list(w.shape)}, means {list(mu.shape)}, factors "
                                   f"{list(f.shape)}, noise_std {list(s.shape)} are not [K], [K, D], [K, D, r], [K]")
        if not all(torch.isfinite(t).all() for t in (w, mu, f, s)) or (s <= 0).any() or (w < 0).any():
            raise ConfigError(key, f"{path}: non-finite values, a negative weight or a noise_std <= 0")
        return cls(w / w.sum(), mu, f, s)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # ---- the noised mixture --------------------------------------------------------------------------------------
    def noised(self, x: torch.Tensor, abar) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For x [B, D] at level ``abar``: each component's log density [B, K], u_k = M_k^{-1} G_k^T (x - sqrt(abar)
        mu_k) [B, K, r] and c_k [K], where C_k = c_k I + G_k G_k^T, G_k = sqrt(abar) F_k, M_k = c_k I + G_k^T G_k
        (Woodbury: C_k^{-1} v = (v - G_k M_k^{-1} G_k^T v) / c_k). Dense products only, no [B, K, D] tensor. Float64."""
        x, abar = x.double(), torch.as_tensor(abar, dtype=torch.float64, device=x.device)
        a, (k, d, r) = abar.sqrt(), self.factors.shape
        c = abar * self.noise_std ** 2 + 1 - abar
        gv = a * ((x @ self.factors.permute(1, 0, 2).reshape(d, k * r)).view(-1, k, r)
                  - a * torch.einsum("kd,kdr->kr", self.means, self.factors))
        vv = (x * x).sum(1, keepdim=True) - 2 * a * x @ self.means.T + abar * (self.means ** 2).sum(1)
        eye = torch.eye(r, dtype=torch.float64, device=x.device)
        chol = torch.linalg.cholesky(c[:, None, None] * eye + abar * self.gram)
        u = torch.cholesky_solve(gv.permute(1, 2, 0), chol).permute(2, 0, 1)
        quad = (vv - (gv * u).sum(-1)) / c
        logdet = (d - r) * c.log() + 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (d * math.log(2 * math.pi) + logdet + quad), u, c

    def log_prob(self, x: torch.Tensor, abar=1.0) -> torch.Tensor:
        """log p_abar(x) [B] of the mixture noised to level ``abar`` (1: the mixture itself). Float64."""
        log_n, _, _ = self.noised(x, abar)
        return torch.logsumexp(log_n + self.weights.log(), dim=1)

    def score(self, x: torch.Tensor, abar=1.0) -> torch.Tensor:
        """grad_x log p_abar(x) [B, D], closed-form. Float64."""
        log_n, u, c = self.noised(x, abar)
        q = torch.softmax(log_n + self.weights.log(), dim=1) / c  # responsibility / c_k [B, K]
        a, (k, d, r) = torch.as_tensor(abar, dtype=torch.float64).sqrt(), self.factors.shape
        pulled = (u * q[..., None]).reshape(len(q), k * r) @ self.factors.permute(1, 0, 2).reshape(d, k * r).T
        return -(q.sum(1, keepdim=True) * x.double() - a * (q @ self.means + pulled))

    def noise_prediction(self, x: torch.Tensor, abar) -> torch.Tensor:
        """The exact epsilon prediction at level ``abar``: E[eps | x_t] = -sqrt(1 - abar) score. Float64."""
        return -(1 - torch.as_tensor(abar, dtype=torch.float64)).sqrt() * self.score(x, abar)

    # ---- sampling and conditioning -------------------------------------------------------------------------------
    def sample_components(self, components: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw x [N, D] of each given component [N] (noise drawn on the CPU from ``generator``)."""
        r = self.factors.shape[-1]
        z = torch.randn(len(components), r + self.dim, generator=generator, dtype=torch.float64).to(self.means.device)
        k = components.to(self.means.device)
        return (self.means[k] + torch.einsum("ndr,nr->nd", self.factors[k], z[:, :r])
                + self.noise_std[k, None] * z[:, r:])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws x [n, D] of the mixture."""
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)
        return self.sample_components(k, generator)

    def covariance(self) -> torch.Tensor:
        """Each component's covariance [K, D, D] (for checks on small mixtures)."""
        eye = torch.eye(self.dim, dtype=torch.float64, device=self.means.device)
        return self.factors @ self.factors.transpose(1, 2) + self.noise_std[:, None, None] ** 2 * eye

    def total_covariance(self) -> torch.Tensor:
        """The covariance of the whole mixture [D, D]: sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T."""
        mean = self.weights @ self.means
        second = torch.einsum("k,kdr,ker->de", self.weights, self.factors, self.factors)
        second += torch.diag(torch.full((self.dim,), float(self.weights @ self.noise_std ** 2), dtype=torch.float64,
                                        device=self.means.device))
        second += torch.einsum("k,kd,ke->de", self.weights, self.means, self.means)
        return second - torch.outer(mean, mean)

    def condition(self, matrix: torch.Tensor, features: torch.Tensor, rtol: float = 1e-6) -> "LinearPosterior":
        """The exact posterior p(x | A x = y) for a matrix A [m, D] and features y [N, m] (each target's A t)."""
        return LinearPosterior(self, matrix, features, rtol)


def row_space(matrix: torch.Tensor, features: torch.Tensor, rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """An orthonormal basis B [n, D] of the row space of A [m, D] (A = U S V^T, singular values above ``rtol`` x the
    largest) and, per feature y [N, m], the coordinates z = S^-1 U^T y [N, n] that every x with A x = y has there
    (B x = z; the least-squares x's when y is not in A's range)."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    keep = s > rtol * s[0]
    return vh[keep], (features @ u[:, keep]) / s[keep]


class LinearPosterior:
    """p(x | A x = y) of a :class:`GaussianMixture`, per target: again a mixture, of Gaussians confined to the
    affine set B x = z, where B [n, D] is an orthonormal basis of A's row space (singular values above ``rtol`` of the
    largest) and z = B x for any x with A x = y (the least-squares one when y is not in A's range).

    Component k: weight ~ w_k N(z; B mu_k, B Sigma_k B^T); mean mu_k + G_k (z - B mu_k) with the gain
    G_k = Sigma_k B^T (B Sigma_k B^T)^{-1}; a draw is a draw x of component k moved by G_k (z - B x) (Matheron's
    rule), which lies exactly on B x = z.
    """

    def __init__(self, mixture: GaussianMixture, matrix: torch.Tensor, features: torch.Tensor, rtol: float = 1e-6):
        self.mixture = mixture
        a, y = matrix.double().to(mixture.means.device), features.double().to(mixture.means.device)
        if a.ndim != 2 or a.shape[1] != mixture.dim:
            raise ValueError(f"the matrix is {list(a.shape)}; it must be [m, {mixture.dim}]")
        self.basis, self.z = row_space(a, y, rtol)  # B [n, D], z [N, n]
        f = torch.einsum("nd,kdr->knr", self.basis, mixture.factors)  # B F_k [K, n, r]
        eye = torch.eye(len(self.basis), dtype=torch.float64, device=a.device)
        cov = f @ f.transpose(1, 2) + mixture.noise_std[:, None, None] ** 2 * eye  # B Sigma_k B^T
        chol = torch.linalg.cholesky(cov)
        sigma_bt = torch.einsum("kdr,knr->kdn", mixture.factors, f) + mixture.noise_std[:, None, None] ** 2 * self.basis.T
        self.gain = torch.cholesky_solve(sigma_bt.transpose(1, 2), chol).transpose(1, 2)  # G_k [K, D, n]
        r = self.z[:, None, :] - (mixture.means @ self.basis.T)[None]  # z - B mu_k [N, K, n]
        sol = torch.cholesky_solve(r.permute(1, 2, 0), chol)  # [K, n, N]
        log_n = -0.5 * ((r.permute(1, 2, 0) * sol).sum(1).T + 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
                        + len(self.basis) * math.log(2 * math.pi))  # [N, K]
        self.log_weights = torch.log_softmax(log_n + mixture.weights.log(), dim=1)  # [N, K]

    @property
    def weights(self) -> torch.Tensor:
        """Per target, the posterior weight of each component [N, K]."""
        return self.log_weights.exp()

    def component_means(self) -> torch.Tensor:
        """[N, K, D]: mu_k + G_k (z - B mu_k)."""
        mu = self.mixture.means
        return mu[None] + torch.einsum("kdn,tkn->tkd", self.gain, self.z[:, None, :] - (mu @ self.basis.T)[None])

    def mean(self) -> torch.Tensor:
        """Per target, the posterior mean [N, D]."""
        return torch.einsum("tk,tkd->td", self.weights, self.component_means())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws per target [N, n, D], exactly on B x = z."""
        out = []
        for t in range(len(self.z)):
            k = torch.multinomial(self.weights[t].cpu(), n, replacement=True, generator=generator)
            x = self.mixture.sample_components(k, generator)
            k = k.to(x.device)
            for j in k.unique().tolist():
                x[k == j] += (self.z[t] - x[k == j] @ self.basis.T) @ self.gain[j].T
            out.append(x)
        return torch.stack(out)

    def null_projector(self) -> torch.Tensor:
        """I - B^T B [D, D]: the projection onto A's null space."""
        return torch.eye(self.mixture.dim, dtype=torch.float64, device=self.basis.device) - self.basis.T @ self.basis


class GaussianMixturePrior(DiffusionPrior):
    """A Gaussian mixture (``gmm.safetensors`` in ``pretrained``) as a pixel-space diffusion prior with its exact
    denoiser: the noise prediction of the noised mixture in closed form (:class:`GaussianMixture`), batched and
    differentiable, so that guidance backpropagates through it as through a UNet and any variance-preserving diffusers
    scheduler steps it unchanged. The zoo's ``fmnist-gmm`` is Fashion-MNIST's.

    Args:
        pretrained: a folder with ``gmm.safetensors`` (weights [K], means [K, D], factors [K, D, r], noise_std [K]),
            ``config.json`` (``sample_shape``: [C, H, W] with C * H * W = D) and ``scheduler/`` (the noise schedule the
            timesteps refer to).
        scheduler, scheduler_config, scheduler_subfolder: as :class:`~lit_featinv.DiffusionPrior`.
    """

    prediction = "epsilon"

    def __init__(self, pretrained: str, scheduler: str = "diffusers.DDIMScheduler",
                 scheduler_config: dict | None = None, scheduler_subfolder: str | None = "scheduler"):
        nn.Module.__init__(self)
        key = "model.prior.pretrained"
        folder = Path(check_source(pretrained, key))
        for name in (MIXTURE_FILE, CONFIG_FILE):
            if not (folder / name).is_file():
                raise ConfigError(key, f"{str(folder)!r} has no {name} (a Gaussian-mixture prior's folder holds "
                                       f"{MIXTURE_FILE}, {CONFIG_FILE} and scheduler/)")
        self.pretrained = pretrained
        self.scheduler = load_scheduler(str(folder), scheduler, scheduler_config, scheduler_subfolder)
        if getattr(self.scheduler, "alphas_cumprod", None) is None:
            raise ConfigError("model.prior.scheduler", f"{type(self.scheduler).__name__} has no alphas_cumprod: the "
                                                       f"mixture's denoiser needs a variance-preserving schedule")
        self.mixture = GaussianMixture.load(folder / MIXTURE_FILE, key)
        self.shape = tuple(json.loads((folder / CONFIG_FILE).read_text()).get("sample_shape") or ())
        if math.prod(self.shape) != self.mixture.dim:
            raise ConfigError(key, f"{folder / CONFIG_FILE}: sample_shape {list(self.shape)} does not hold the "
                                   f"mixture's D = {self.mixture.dim} values")
        abar = self.scheduler.alphas_cumprod.double()
        self.register_buffer("log_snr", (abar / (1 - abar)).log(), persistent=False)
        self.requires_grad_(False).eval()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape

    def level(self, t) -> torch.Tensor:
        """The signal level abar of a (possibly fractional) timestep: log-SNR interpolated in the model's schedule."""
        t = torch.as_tensor(t, dtype=torch.float64, device=self.log_snr.device).reshape(-1)[0]
        low = t.floor().long().clamp(0, len(self.log_snr) - 1)
        high = (low + 1).clamp(max=len(self.log_snr) - 1)
        frac = t - low
        return torch.sigmoid(self.log_snr[low] * (1 - frac) + self.log_snr[high] * frac)

    def denoise(self, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact noise prediction at timestep t, float32."""
        eps = self.mixture.noise_prediction(sample.flatten(1), self.level(t))
        return eps.view(sample.shape).float()
