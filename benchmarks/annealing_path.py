"""Where along the annealing path the posterior's component appears, in the exact-posterior world (issue 35, goal 1:
why no sampler chooses the component).

Annealed Langevin (``benchmarks/langevin.py``) targets, at each noise level sigma, the prior noised to sigma restricted
to the feature's affine set (the null-space probe, too, keeps every step on that set; guidance has no stated
intermediate law). On that path component k holds the share w_k N(z; B mu_k, B (Sigma_k + sigma^2 I) B^T) / sum_j (...)
of the mass, closed-form here: at sigma = 0 it is the exact posterior's weight, at sigma = 5 little more than the
prior's. Per target this script follows the share of the posterior's most likely component k* down the path, finds the
noise level from which on k* holds at least half of the mass (``leads from``: early, sigma >= 1; middle, 0.25-0.5; late,
sigma <= 0.15, where the chains no longer move between components), and sets beside it the share of generations in k*:
annealed Langevin at its script's defaults, the same with exact importance weights between levels (an oracle: sequential
Monte Carlo over the levels with the closed-form density ratio p_sigma' / p_sigma, systematic resampling per target when
the effective sample size falls under half; the generations are its particles), the same Langevin on the posterior's own
path (an oracle: each level the exact posterior with its null-space coordinates noised by sigma, which keeps every
component's weight at every level), ``guided`` from a ``benchmarks/posterior.py`` run (``--guided-run``, the same
targets and generations), and exact draws with and without ``--hotter`` isotropic noise added in the null space (how
much the measure takes a too-hot sample for another component).

Run: python benchmarks/annealing_path.py --out runs/annealing_path [--guided-run runs/posterior_g64 --generations 64]
Writes OUT/annealing_path.md (the tables, the command) and OUT/annealing_path.json.
"""
from __future__ import annotations

import math
import os
import shlex
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import components  # noqa: E402
import langevin  # noqa: E402
import posterior  # noqa: E402
import probe  # noqa: E402

from lit_featinv.method import ess, systematic  # noqa: E402


PATH = (5.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.15, 0.1, 0.05, 0.02, 0.0)


def path_shares(world, post, sigmas=PATH) -> torch.Tensor:
    """[N, len(sigmas)]: the share of each target's most likely posterior component in the prior noised to sigma,
    restricted to the affine set."""
    top = post.weights.argmax(1, keepdim=True)
    out = []
    for sigma in sigmas:
        noised = type(world)(world.weights, world.means, world.factors, (world.noise_std ** 2 + sigma ** 2).sqrt())
        out.append(noised.condition(post.basis, post.z).weights.gather(1, top).squeeze(1))
    return torch.stack(out, 1)


def log_level(world, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p_sigma(x) up to a constant shared by every x: the mixture noised to sigma (x + sigma n)."""
    abar = 1 / (1 + sigma ** 2)
    return world.log_prob(math.sqrt(abar) * x, abar)


def weighted_langevin(world, basis, coords, rows, sigmas, per_level, delta, floor, gen, generations, ess_min=0.5):
    """Annealed Langevin on the affine set whose ``generations`` draws per target are particles weighted by the exact
    density ratio between levels (annealed importance sampling) and resampled per target when the effective sample
    size falls under ``ess_min``; resampled once more at the end. Returns (x [rows, D], resamplings per target)."""
    logw, groups, resamplings = torch.zeros(rows, dtype=torch.float64), torch.arange(rows).view(-1, generations), 0

    def reweigh(i, x):
        nonlocal logw, resamplings
        last = i + 1 == len(sigmas)
        if not last:
            logw = logw + log_level(world, x, sigmas[i + 1]) - log_level(world, x, sigmas[i])
        w = torch.softmax(logw.view(-1, generations), 1)
        again = (ess(logw.view(-1, generations)) < ess_min) | last
        pick = groups.clone()
        for t in again.nonzero().flatten().tolist():
            pick[t] = t * generations + systematic(w[t], generations, float(torch.rand(1, generator=gen)))
            resamplings += 1
        logw = torch.where(again[:, None], 0.0, logw.view(-1, generations)).flatten()
        return x[pick.flatten()]
    x = langevin.annealed_langevin(world, basis, coords, rows, sigmas, per_level, delta, floor, gen, reweigh)
    return x, resamplings / len(groups)


def posterior_null_mixture(post) -> tuple[torch.Tensor, list]:
    """The exact posterior in null-space coordinates u = N x (N [D - n, D] an orthonormal basis of A's null space):
    per target a mixture with the posterior's weights, means N m_k and covariance s_k^2 I + L_k L_k^T, L_k = N F_k
    (s_k^2 (s_k^2 I + (B F_k)^T B F_k)^-1)^(1/2) (the Schur complement of B Sigma_k B^T, by the push-through
    identity). Returns (N, one mixture per target)."""
    world = post.mixture
    null = torch.linalg.svd(post.basis, full_matrices=True).Vh[len(post.basis):]  # [D - n, D]
    bf, nf = (torch.einsum("nd,kdr->knr", m, world.factors) for m in (post.basis, null))
    s2 = world.noise_std[:, None, None] ** 2
    eye = torch.eye(world.factors.shape[-1], dtype=torch.float64)
    vals, vecs = torch.linalg.eigh(s2 * torch.linalg.inv(s2 * eye + bf.transpose(1, 2) @ bf))
    factors = nf @ (vecs * vals.clamp(min=0).sqrt()[:, None, :] @ vecs.transpose(1, 2))
    means = post.component_means() @ null.T  # [N, K, D - n]
    return null, [type(world)(w, m, factors, world.noise_std) for w, m in zip(post.weights, means)]


def posterior_path_langevin(post, rows, sigmas, per_level, delta, floor, gen, generations) -> torch.Tensor:
    """The same annealed Langevin on the posterior's own path (an oracle: its exact score): level sigma targets the
    posterior with its null-space coordinates noised by sigma, which keeps every component's posterior weight at every
    level (the restricted prior noises the measured coordinates too). x [rows, D], on the affine set."""
    null, mixtures = posterior_null_mixture(post)
    levels = {}  # sigma -> each target's mixture noised to it, built once per level

    def score(u, sigma):
        if sigma not in levels:
            levels[sigma] = [type(m)(m.weights, m.means, m.factors, (m.noise_std ** 2 + sigma ** 2).sqrt())
                             for m in mixtures]
        return torch.cat([m.score(part) for m, part in zip(levels[sigma], u.view(len(mixtures), generations, -1))])
    noise = lambda: torch.randn(rows, len(null), generator=gen, dtype=torch.float64)  # noqa: E731
    u = langevin.anneal(sigmas[0] * noise(), score, noise, sigmas, per_level, delta, floor)  # from x_p + sigma P n
    return post.z.repeat_interleave(generations, 0) @ post.basis + u @ null


def tables(results: dict) -> list[str]:
    """The tables of a run's results (OUT/annealing_path.json's ``results``) as markdown lines."""
    lines = ["Mean share of k* on the path, over the targets:", "",
             "| feature | " + " | ".join(f"sigma {s:g}" for s in PATH) + " |", "| --- |" + " --- |" * len(PATH)]
    for feature, r in results.items():
        mean = torch.tensor(r["shares"]).mean(0)
        lines.append(f"| {feature} | " + " | ".join(f"{float(v):.2f}" for v in mean) + " |")
    names = list(next(iter(results.values()))["in_top"])
    buckets = {"early (sigma >= 1)": lambda v: v >= 1, "middle (0.25-0.5)": lambda v: 0.25 <= v < 1,
               "late (sigma <= 0.15)": lambda v: v < 0.25, "every target": lambda v: True}
    lines += ["", "Share of generations in k* (mean over the targets in each group):",
              "", "| feature | k* leads from | targets | k*'s least share at sigma >= 0.25 (median) | "
              + " | ".join(names) + " |", "| --- | --- | --- | --- |" + " --- |" * len(names)]
    above = [i for i, v in enumerate(PATH) if v >= 0.25]
    for feature, r in results.items():
        for bucket, member in buckets.items():
            keep = torch.tensor([member(v) for v in r["leads_from"]])
            if keep.any():
                least = torch.tensor(r["shares"])[keep][:, above].min(1).values
                cells = [f"{float(torch.tensor(r['in_top'][n])[keep].mean()):.2f}" for n in names]
                lines.append(f"| {feature} | {bucket} | {int(keep.sum())} | {float(least.median()):.1e} | "
                             + " | ".join(cells) + " |")
    lines += ["", "Resamplings per target of the weighted Langevin: " + ", ".join(
        f"{f} {r['resamplings']:.1f}" for f, r in results.items()) + ".", "",
              "Goal 1's measures (benchmarks/posterior.py's) on every generation:", "",
              "| feature | sampler | null spread | residual (exact draws') | SW | SW / exact's |",
              "| --- | --- | --- | --- | --- | --- |"]
    for feature, r in results.items():
        rows, exact = r["measures"], f"exact x {r['generations']}"
        for name, m in rows.items():
            if name != "reference":
                lines.append(f"| {feature} | {name} | {m['null_spread']:.3f} | {m['residual']:.4f} "
                             f"({rows['reference']['residual']:.4f}) | {m['sw']:.4f} | "
                             f"{m['sw'] / rows[exact]['sw']:.2f} |")
    return lines + [""] + [f"{feature}: {posterior.goal_line(r['measures'], r['generations'])}"
                           for feature, r in results.items()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = langevin.arguments(probe.parser(__doc__, "runs/annealing_path"))
    p.set_defaults(generations=32, reference=1024, features="left_half,top_half,blur,pool4")
    p.add_argument("--hotter", type=float, default=0.1,
                   help="a row of exact draws with this much isotropic noise added in the null space: the component "
                        "measure's sensitivity to a sample's temperature")
    p.add_argument("--guided-run", default=None,
                   help="a benchmarks/posterior.py --out folder with guided's generations")
    a = p.parse_args(argv)
    sigmas = torch.logspace(math.log10(a.sigma_max), math.log10(a.sigma_min), a.levels).tolist()
    plain = langevin.sampler(a)
    results, counts = {}, {}

    def weighted(world, basis, coords, rows, gen):
        x, counts["resamplings"] = weighted_langevin(world, basis, coords, rows, sigmas, a.per_level, a.delta,
                                                     a.floor, gen, a.generations)
        return x

    def on_posterior_path(post):
        return lambda world, basis, coords, rows, gen: posterior_path_langevin(post, rows, sigmas, a.per_level,
                                                                               a.delta, a.floor, gen, a.generations)

    for world, feature, known in probe.truths(a):
        shares = path_shares(world, known.posterior)
        leads = [max([s for i, s in enumerate(PATH) if bool((row[i:] >= 0.5).all())], default=0.0) for row in shares]
        top = known.posterior.weights.argmax(1)
        made = {"langevin": probe.drawn(world, known, a, plain),
                "langevin + exact weights": probe.drawn(world, known, a, weighted),
                "langevin on the posterior's path": probe.drawn(world, known, a, on_posterior_path(known.posterior))}
        if a.guided_run:
            made["guided"] = probe.guided(a.guided_run, feature, a, "annealing_path")
        made[f"exact x {a.generations}"] = known.exact
        hot = torch.randn(known.exact.shape, generator=torch.Generator().manual_seed(a.seed + 2), dtype=torch.float64)
        made[f"exact x {a.generations} + {a.hotter:g} null noise"] = posterior.as_saved(
            known.exact + a.hotter * hot @ known.null)
        in_top = {name: (components.components(world, x) == top[:, None]).double().mean(1) for name, x in made.items()}
        measures = {"reference": known.measure(known.reference)} | {
            name: known.measure(x) for name, x in made.items() if "null noise" not in name}
        results[feature] = {"path": PATH, "shares": shares.tolist(), "leads_from": leads,
                            "generations": a.generations, "measures": measures,
                            "posterior_weight": known.posterior.weights.max(1).values.tolist(),
                            "in_top": {name: v.tolist() for name, v in in_top.items()},
                            "resamplings": counts["resamplings"]}
        print(f"annealing_path: {feature} done", flush=True)
    lines = [f"# Where the posterior's component appears along the annealing path ({a.targets} targets x "
             f"{a.generations} generations)", "",
             f"`python benchmarks/annealing_path.py {shlex.join(argv)}`, {time.strftime('%Y-%m-%d')}, "
             f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}. Langevin: {a.levels} levels x "
             f"{a.per_level} steps, sigma {a.sigma_max:g} -> {a.sigma_min:g}. k* leads from sigma: the largest "
             f"noise level below which the posterior's component k* holds at least half of the path's mass.", ""]
    lines += tables(results)
    probe.write(a.out, "annealing_path", lines, {"results": results, "argv": argv})
    return 0


if __name__ == "__main__":
    sys.exit(main())
