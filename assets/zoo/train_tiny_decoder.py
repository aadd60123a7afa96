"""Distil a tiny decoder (diffusers ``AutoencoderTiny``, the TAESD architecture, narrower) from the zoo's latent VAE,
for the guidance's cheap decoder (``model.guidance.decoder``) on the zoo's latent prior.

Teacher: ``fmnist-ldm/vae``'s decoder. Inputs: what the guidance decodes, in the UNet's latent space (VAE means x
``scaling_factor``): half clean latents of Fashion-MNIST training images, half the latent UNet's clean estimates
x0 = (z_t - sqrt(1 - abar) eps) / sqrt(abar) from them at uniform random timesteps. Target: the teacher's decode of
the same latent (distillation, as TAESD: it imitates the VAE decoder, not the data). Loss L1 + L2; AdamW; a wall-clock
budget. The encoder half of the AutoencoderTiny is left untrained (the guidance uses only the decoder).

    python assets/zoo/train_tiny_decoder.py [--budget 300] [--count 12000]   # 2-core CPU: ~8 min
Writes ``assets/zoo/fmnist-ldm/tiny-decoder/`` and prints held-out RMSE against the teacher (and the VAE's own RMSE
to the data, for scale). Needs: apt-get install dataset-fashion-mnist
"""
from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny, DDPMScheduler, UNet2DModel

ZOO = Path(__file__).resolve().parent
DATA = "/usr/share/datasets/fashion-mnist"


def images(name: str, count: int) -> torch.Tensor:
    """The first ``count`` items as 32x32 in [-1, 1] (the zoo's input space)."""
    with gzip.open(os.path.join(DATA, name)) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:count]
    return F.pad(torch.from_numpy(raw.copy()).float() / 255, (2, 2, 2, 2)) * 2 - 1


@torch.no_grad()
def pairs(x: torch.Tensor, vae, unet, scheduler, generator, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents the guidance would decode, the teacher's images of them): the first half clean latents, the second
    half UNet clean estimates."""
    sf = vae.config.scaling_factor
    clean, estimates = [], []
    for start in range(0, len(x), batch):
        z = vae.encode(x[start:start + batch]).latent_dist.mean * sf
        half = len(z) // 2
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z) - half,), generator=generator)
        abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        noise = torch.randn(z[half:].shape, generator=generator)
        zt = abar.sqrt() * z[half:] + (1 - abar).sqrt() * noise
        x0 = (zt - (1 - abar).sqrt() * unet(zt, t).sample) / abar.sqrt()
        clean.append(z[:half])
        estimates.append(x0)
    inputs = torch.cat(clean + estimates)
    return inputs, torch.cat([vae.decode(z / sf).sample for z in inputs.split(batch)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=300, help="training seconds")
    p.add_argument("--count", type=int, default=12000, help="training images (half clean latents, half estimates)")
    p.add_argument("--out", default=str(ZOO / "fmnist-ldm" / "tiny-decoder"))
    a = p.parse_args()
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    ldm = ZOO / "fmnist-ldm"
    vae = AutoencoderKL.from_pretrained(ldm, subfolder="vae", torch_dtype=torch.float32).eval().requires_grad_(False)
    unet = UNet2DModel.from_pretrained(ldm, subfolder="unet", torch_dtype=torch.float32).eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(ldm, subfolder="scheduler")
    start = time.perf_counter()
    train = pairs(images("train-images-idx3-ubyte.gz", a.count), vae, unet, scheduler, generator)
    test_x = images("t10k-images-idx3-ubyte.gz", 1000)
    test = pairs(test_x, vae, unet, scheduler, generator)
    print(f"teacher pairs: {len(train[0])} train, {len(test[0])} test, {time.perf_counter() - start:.0f} s", flush=True)
    student = AutoencoderTiny(in_channels=1, out_channels=1, latent_channels=4,
                              encoder_block_out_channels=(16, 16, 16), decoder_block_out_channels=(16, 16, 16),
                              num_encoder_blocks=(1, 2, 3), num_decoder_blocks=(3, 2, 1))
    decoder = student.decoder.train()
    opt = torch.optim.AdamW(decoder.parameters(), lr=2e-3, weight_decay=0.0)
    start, step, epoch = time.perf_counter(), 0, 0
    while time.perf_counter() - start < a.budget:
        for idx in torch.randperm(len(train[0]), generator=generator).split(128):
            out = student.decode(train[0][idx]).sample
            loss = F.l1_loss(out, train[1][idx]) + F.mse_loss(out, train[1][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if time.perf_counter() - start > a.budget:
                break
        epoch += 1
        print(f"epoch {epoch} step {step} loss {loss.item():.4f} {time.perf_counter() - start:.0f} s", flush=True)
    student.eval()
    with torch.no_grad():
        out = torch.cat([student.decode(z).sample for z in test[0].split(500)])
        half = len(out) // 2
        rmse = lambda u, v: (u - v).square().mean().sqrt().item()  # noqa: E731
        own = rmse(test[1][:half], torch.cat([test_x[i:i + 500][:250] for i in range(0, len(test_x), 500)]))
    print(f"held-out RMSE to the teacher, in [-1, 1]: clean latents {rmse(out[:half], test[1][:half]):.4f}, "
          f"clean estimates {rmse(out[half:], test[1][half:]):.4f}; the VAE's own RMSE to the images {own:.4f}; "
          f"{sum(p.numel() for p in decoder.parameters()) / 1e3:.0f}k decoder parameters, {step} steps, "
          f"{epoch} epochs", flush=True)
    student.save_pretrained(a.out)


if __name__ == "__main__":
    main()
