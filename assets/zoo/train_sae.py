"""Train a TopK sparse autoencoder on the zoo ResNet's pooled features of Fashion-MNIST, saved in SAELens' layout.

Features: ``TimmExtractor("local-dir:assets/zoo/fmnist-resnet10t")`` (512-d, pooled pre-classifier) of the 60,000
training and 10,000 test items, zero-padded to 32x32 (the zoo's input space). SAE (Gao et al. 2024, "Scaling and
evaluating sparse autoencoders"): ``z = TopK_k(ReLU(W_enc^T (x - b_dec) + b_enc))``, ``x_hat = W_dec^T z + b_dec``;
``b_dec`` starts at the feature mean, ``W_dec``'s rows at random training features minus that mean (data-point init,
as saev's; random unit rows, all else the same, left 577 latents never active on the training items), unit norm (renormalised after every step), ``W_enc`` at
``W_dec^T``; loss: squared error + AuxK / 32 (the dead latents' top ``k_aux`` reconstruct the residual; dead: no
activation in the last 20,000 training samples); Adam; a wall-clock budget.

    python assets/zoo/train_sae.py [--budget 120] [--latents 2048] [--k 16]   # 2-core CPU, 1 thread: ~3 min

Writes ``assets/zoo/sae-resnet10t/``: ``sae_weights.safetensors`` (float16: W_enc [512, 2048], b_enc, W_dec [2048,
512], b_dec), ``cfg.json`` (SAELens' TopK config), ``onehot8.npy`` (the preset's targets) and ``train_log.txt``.
Reports, with the weights as saved and read back by ``lit_featinv.models.sae``: the fraction of variance explained
on the test features, dead latents, and the 8 latents the preset ``configs/fmnist/sae_latents.yaml`` visualises.
Needs: apt-get install dataset-fashion-mnist
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lit_featinv import TimmExtractor
from lit_featinv.models.sae import SAEExtractor, read_sae

ZOO = Path(__file__).resolve().parent
DATA = "/usr/share/datasets/fashion-mnist"
LABELS = json.loads((ZOO / "fmnist-resnet10t" / "config.json").read_text())["label_names"]


def read_idx(name: str, offset: int) -> np.ndarray:
    with gzip.open(os.path.join(DATA, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def images(split: str) -> torch.Tensor:
    """All items of ``split`` (train, t10k) as 32x32 in [0, 1], zero-padded by 2 pixels (the zoo's input space)."""
    raw = read_idx(f"{split}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    return F.pad(torch.from_numpy(raw.copy()).float() / 255, (2, 2, 2, 2))


@torch.no_grad()
def features(extractor, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([extractor.measure(batch) for batch in x.split(1000)])


def pre_activation(p: dict, x: torch.Tensor) -> torch.Tensor:
    return (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]


def decode(p: dict, values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return (values.unsqueeze(-1) * p["W_dec"][index]).sum(1) + p["b_dec"]


def train(x: torch.Tensor, latents: int, k: int, budget: float, lr: float, batch: int, log, aux_weight: float = 1 / 32,
          dead_after: int = 20_000) -> dict:
    d_in = x.shape[1]
    w_dec = F.normalize(x[torch.randperm(len(x))[:latents]] - x.mean(0), dim=1)  # data-point init (as saev's)
    p = {"W_enc": w_dec.T.clone(), "b_enc": torch.zeros(latents), "W_dec": w_dec, "b_dec": x.mean(0)}
    for v in p.values():
        v.requires_grad_(True)
    opt = torch.optim.Adam(p.values(), lr=lr)
    unseen = torch.zeros(latents)  # training samples since each latent last fired
    k_aux = d_in // 2
    start, step, epoch = time.perf_counter(), 0, 0
    while time.perf_counter() - start < budget:
        for index in torch.randperm(len(x)).split(batch):
            xb = x[index]
            pre = pre_activation(p, xb)
            values, chosen = pre.topk(k, dim=1)
            values = values.relu()
            recon = decode(p, values, chosen)
            loss = mse = (recon - xb).pow(2).sum(1).mean()
            fired = torch.zeros(latents, dtype=torch.bool)
            fired[chosen[values > 0]] = True
            unseen = torch.where(fired, 0, unseen + len(xb))
            dead = unseen > dead_after
            if dead.any():  # AuxK: the dead latents' top k_aux pre-activations model the residual
                aux_values, aux_index = pre.masked_fill(~dead, float("-inf")).topk(min(k_aux, int(dead.sum())), dim=1)
                aux = torch.zeros_like(pre).scatter(1, aux_index, aux_values.relu()) @ p["W_dec"]
                loss = loss + (aux - (xb - recon).detach()).pow(2).sum(1).mean() * aux_weight
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                p["W_dec"].copy_(F.normalize(p["W_dec"], dim=1))
            step += 1
            if time.perf_counter() - start >= budget:
                break
        epoch += 1
        log(f"epoch {epoch} step {step} mse {mse.item():.4f} dead(20k) {int(dead.sum())} "
            f"{time.perf_counter() - start:.0f} s")
    return {name: v.detach() for name, v in p.items()}


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--budget", type=float, default=120, help="training seconds")
    a.add_argument("--latents", type=int, default=2048)
    a.add_argument("--k", type=int, default=16)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--batch", type=int, default=1024)
    a.add_argument("--out", default=str(ZOO / "sae-resnet10t"))
    args = a.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "train_log.txt", "w")

    def log(text: str) -> None:
        print(text, flush=True)
        log_file.write(text + "\n")
        log_file.flush()

    log(f"python assets/zoo/train_sae.py --budget {args.budget:g} --latents {args.latents} --k {args.k} "
        f"--lr {args.lr:g} --batch {args.batch}  (torch {torch.__version__}, 1 thread)")
    begin = time.perf_counter()
    extractor = TimmExtractor(f"local-dir:{ZOO / 'fmnist-resnet10t'}")
    train_x, test_x = features(extractor, images("train")), features(extractor, images("t10k"))
    test_y = torch.from_numpy(read_idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    log(f"features: {tuple(train_x.shape)} train, {tuple(test_x.shape)} test, {time.perf_counter() - begin:.0f} s")
    p = train(train_x, args.latents, args.k, args.budget, args.lr, args.batch, log)

    weights = out / "sae_weights.safetensors"
    save_file({name: v.half().contiguous() for name, v in p.items()}, str(weights))
    cfg = {"architecture": "topk", "d_in": train_x.shape[1], "d_sae": args.latents, "k": args.k, "dtype": "float16",
           "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
           "rescale_acts_by_decoder_norm": False, "reshape_activations": "none",
           "metadata": {"model_name": "assets/zoo/fmnist-resnet10t", "hook_name": "forward_head(pre_logits=True)"}}
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
    np.save(out / "onehot8.npy", np.eye(8, dtype=np.float32))

    # the weights as saved, read back and run as the package runs them
    sae = SAEExtractor(extractor, str(weights), layout="saelens", activation="topk", k=args.k)
    with torch.no_grad():
        saved = read_sae(str(weights))
        codes = {split: torch.cat([sae.encode(f) for f in x.split(1000)]) for split, x in
                 (("train", train_x), ("test", test_x))}
        recon = codes["test"] @ saved["W_dec"] + saved["b_dec"]
    fve = 1 - (recon - test_x).pow(2).sum() / (test_x - test_x.mean(0)).pow(2).sum()
    active = {split: (c > 0).float().mean(0) for split, c in codes.items()}
    log(f"test: fraction of variance explained {fve:.4f}, mean L0 {(codes['test'] > 0).sum(1).float().mean():.2f}; "
        f"dead latents (never active): {int((active['test'] == 0).sum())} on the 10,000 test items, "
        f"{int((active['train'] == 0).sum())} on the 60,000 training items (of {args.latents})")

    # the preset's 8 latents, one per class for 8 classes: greedily the (class, latent) pairs with the largest gap
    # between the latent's mean code on the class's 1,000 test items and on the other 9,000, each class and latent once
    gaps = torch.stack([codes["test"][test_y == c].mean(0) - codes["test"][test_y != c].mean(0) for c in range(10)])
    chosen = {}
    for flat in gaps.flatten().argsort(descending=True).tolist():
        c, latent = divmod(flat, args.latents)
        if c not in chosen and latent not in chosen.values():
            chosen[c] = latent
        if len(chosen) == 8:
            break
    for c, latent in sorted(chosen.items()):
        log(f"latent {latent}: class {LABELS[c]}, gap {gaps[c, latent]:.3f}, active on "
            f"{active['test'][latent]:.1%} of test items")
    log(f"preset latents: {[latent for _, latent in sorted(chosen.items())]}")
    log(f"total {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
