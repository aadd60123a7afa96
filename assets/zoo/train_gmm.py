"""Fit the zoo's Gaussian-mixture prior of Fashion-MNIST: a world whose denoiser and posteriors are exact.

Data: the 60,000 training items in the diffusion models' space (zero-padded to 32x32, one channel, [-1, 1],
background -1; flattened row-major, D = 1024). Per class, k-means (k-means++ seeding, a fixed seed) splits the items
into ``--per-class`` clusters; each cluster is one component, fitted by probabilistic PCA in closed form (Tipping and
Bishop 1999, maximum likelihood): its mean, a rank ``--rank`` factor F = U_r (L_r - s^2 I)^(1/2) from the cluster's
covariance eigenvectors U_r and eigenvalues L_r, and the isotropic floor s^2 = the mean of the remaining eigenvalues;
its weight is its share of the items. Sigma_k = F_k F_k^T + s_k^2 I.

    python assets/zoo/train_gmm.py [--per-class 3] [--rank 32]      # 2-core CPU: about a minute

Writes ``assets/zoo/fmnist-gmm/``: ``gmm.safetensors`` (float32: weights [K], means [K, D], factors [K, D, r],
noise_std [K]), ``config.json`` (sample shape, classes of the components, how it was fitted), ``scheduler/`` (the
zoo DDPM's noise schedule), ``samples.png`` (64 draws, clamped to [-1, 1]) and ``train_log.txt``: the held-out log
likelihood of the 10,000 test items (nats and bits per dimension, on the 8-bit scale) beside the other settings
tried (``--compare``), and the class the zoo ResNet gives the draws. Also ``assets/features/left_half.safetensors``
(the ``gmm/guided`` preset's default linear feature: the left 16 columns of the 32x32 image, [512, 1024], float16:
0 and 1).
Needs: apt-get install dataset-fashion-mnist
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lit_featinv.models import GaussianMixture, TimmExtractor

ZOO = Path(__file__).resolve().parent
OUT, FEATURES = ZOO / "fmnist-gmm", ZOO.parent / "features"
DATA = "/usr/share/datasets/fashion-mnist"
LABELS = json.loads((ZOO / "fmnist-resnet10t" / "config.json").read_text())["label_names"]


def read_idx(name: str, offset: int) -> np.ndarray:
    path = os.path.join(DATA, name)
    if not os.path.exists(path):
        raise SystemExit(f"train_gmm: {path} is missing: apt-get install dataset-fashion-mnist")
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def items(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All items of ``split`` (train, t10k) flattened [N, 1024] in [-1, 1] (zero-padded by 2 px: background -1),
    float64, and their labels [N]."""
    raw = read_idx(f"{split}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    x = F.pad(torch.from_numpy(raw.copy()).double() / 127.5 - 1, (2, 2, 2, 2), value=-1.0)
    return x.flatten(1), torch.from_numpy(read_idx(f"{split}-labels-idx1-ubyte.gz", 8).astype(np.int64))


def kmeans(x: torch.Tensor, k: int, gen: torch.Generator, iterations: int = 30) -> torch.Tensor:
    """Cluster labels [N] of x [N, D]: k-means++ seeding, then Lloyd's iterations."""
    centres = x[torch.randint(len(x), (1,), generator=gen)]
    for _ in range(k - 1):
        d = torch.cdist(x, centres).min(1).values ** 2
        centres = torch.cat([centres, x[torch.multinomial(d / d.sum(), 1, generator=gen)]])
    for _ in range(iterations):
        labels = torch.cdist(x, centres).argmin(1)
        centres = torch.stack([x[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
    return torch.cdist(x, centres).argmin(1)


def ppca(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Maximum-likelihood probabilistic PCA of x [N, D]: mean [D], factor [D, rank], noise std."""
    mean = x.mean(0)
    cov = torch.cov((x - mean).T, correction=0)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    floor = float(values[rank:].mean())
    return mean, vectors[:, :rank] * (values[:rank] - floor).clamp_min(0).sqrt(), math.sqrt(floor)


def fit(x: torch.Tensor, labels: torch.Tensor, per_class: int, rank: int, seed: int = 0):
    """The mixture (weights, means, factors, noise_std) and each component's class."""
    gen = torch.Generator().manual_seed(seed)
    parts, classes = [], []
    for c in range(10):
        own = x[labels == c]
        clusters = kmeans(own, per_class, gen) if per_class > 1 else torch.zeros(len(own), dtype=torch.long)
        for j in range(per_class):
            members = own[clusters == j]
            parts.append((len(members) / len(x), *ppca(members, rank)))
            classes.append(c)
    weights = torch.tensor([p[0] for p in parts], dtype=torch.float64)
    means, factors = torch.stack([p[1] for p in parts]), torch.stack([p[2] for p in parts])
    return (weights, means, factors, torch.tensor([p[3] for p in parts], dtype=torch.float64)), classes


def held_out(mixture: GaussianMixture, x: torch.Tensor) -> tuple[float, float]:
    """Mean log likelihood of x per dimension: nats on [-1, 1], and bits on the 8-bit scale (+ log 127.5 per dim)."""
    ll = torch.cat([mixture.log_prob(chunk) for chunk in x.split(1000)]).mean() / x.shape[1]
    return float(ll), float(-(ll - math.log(127.5)) / math.log(2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=3, help="components per class")
    p.add_argument("--rank", type=int, default=32, help="rank r of each component's factor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", default="1x32,3x16,3x64", help="other PER_CLASSxRANK settings whose "
                                                                             "held-out likelihood is logged")
    a = p.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    log = [f"python assets/zoo/train_gmm.py --per-class {a.per_class} --rank {a.rank} --seed {a.seed} --compare "
           f"{a.compare} "
           f"({time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} torch threads, torch {torch.__version__})"]
    x, labels = items("train")
    test, _ = items("t10k")
    log.append("held-out log likelihood of the 10,000 test items (nats per dim on [-1, 1]; bits per dim, 8-bit scale):")
    for setting in [s for s in a.compare.split(",") if s] + [f"{a.per_class}x{a.rank}"]:
        per_class, rank = (int(v) for v in setting.split("x"))
        tensors, classes = fit(x, labels, per_class, rank, a.seed)
        nats, bits = held_out(GaussianMixture(*tensors), test)
        log.append(f"  {per_class} per class x rank {rank} ({10 * per_class} components): {nats:.4f} nats, {bits:.4f} "
                   f"bits per dim" + ("   <- shipped" if setting == f"{a.per_class}x{a.rank}" else ""))
        print(log[-1], flush=True)
    mixture = GaussianMixture(*tensors)
    OUT.mkdir(exist_ok=True)
    save_file({name: t.float().contiguous() for name, t in zip(("weights", "means", "factors", "noise_std"), tensors)},
              str(OUT / "gmm.safetensors"))
    shutil.copytree(ZOO / "fmnist-ddpm" / "scheduler", OUT / "scheduler", dirs_exist_ok=True)
    config = {"sample_shape": [1, 32, 32], "space": "Fashion-MNIST items zero-padded to 32x32, [-1, 1], background -1",
              "components": len(classes), "rank": a.rank, "component_classes": [LABELS[c] for c in classes],
              "fit": f"per class: k-means into {a.per_class} clusters (seed {a.seed}), maximum-likelihood PPCA of each "
                     f"cluster (train_gmm.py)"}
    (OUT / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    draws = mixture.sample(64, torch.Generator().manual_seed(a.seed)).clamp(-1, 1).float()
    images = ((draws.view(-1, 1, 32, 32) + 1) / 2)
    classifier = TimmExtractor(f"local-dir:{ZOO / 'fmnist-resnet10t'}")
    with torch.no_grad():
        predicted = classifier.network(classifier.preprocess(images)).argmax(1)
    log.append(f"64 draws (clamped to [-1, 1]), classes by the zoo ResNet: "
               f"{np.bincount(predicted.numpy(), minlength=10).tolist()} ({', '.join(LABELS)})")
    grid = (images.view(8, 8, 32, 32).permute(0, 2, 1, 3).reshape(256, 256) * 255).round().byte().numpy()
    from PIL import Image
    Image.fromarray(grid, "L").save(OUT / "samples.png")
    FEATURES.mkdir(exist_ok=True)
    left = torch.zeros(32, 32, dtype=torch.bool)
    left[:, :16] = True
    save_file({"matrix": torch.eye(1024, dtype=torch.float16)[left.flatten()].contiguous()},  # 0 and 1: exact
              str(FEATURES / "left_half.safetensors"))
    log.append(f"wrote {OUT.relative_to(ZOO.parent.parent)} ({(OUT / 'gmm.safetensors').stat().st_size / 1e6:.1f} MB) "
               f"and {FEATURES.relative_to(ZOO.parent.parent)}/left_half.safetensors in "
               f"{time.perf_counter() - start:.0f} s")
    (OUT / "train_log.txt").write_text("\n".join(log) + "\n")
    print("\n".join(log[-2:]))


if __name__ == "__main__":
    main()
