"""Tiny random models built from configs and saved to temp folders, loaded through the real
``from_pretrained`` / ``local-dir:`` paths: no network, no GPU."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "assets" / "zoo"
FMNIST = ROOT / "assets" / "fmnist-test32"


def tiny_unet(channels: int, size: int):
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
                       block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def tiny_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                         clip_sample=False)


def save_pixel_prior(folder: Path, channels: int = 1, size: int = 16, prediction_type: str = "epsilon") -> Path:
    from diffusers import DDPMPipeline
    DDPMPipeline(unet=tiny_unet(channels, size), scheduler=tiny_scheduler(prediction_type)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def pixel_prior(tmp_path_factory) -> Path:
    """A tiny 1-channel 16x16 pixel DDPM folder (unet/, scheduler/)."""
    return save_pixel_prior(tmp_path_factory.mktemp("pixel_prior"))


@pytest.fixture(scope="session")
def latent_prior(tmp_path_factory) -> Path:
    """A tiny latent model: AutoencoderKL 16x16x1 -> 8x8x4, UNet on latents, scheduler."""
    from diffusers import AutoencoderKL
    folder = tmp_path_factory.mktemp("latent_prior")
    torch.manual_seed(0)
    AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(16, 32), norm_num_groups=8,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  sample_size=16, scaling_factor=0.7).save_pretrained(folder / "vae")
    tiny_unet(4, 8).save_pretrained(folder / "unet")
    tiny_scheduler().save_pretrained(folder / "scheduler")
    return folder


def save_timm(folder: Path, name: str = "test_resnet", in_chans: int = 1, size: int = 16) -> Path:
    import timm
    from timm.models._hub import save_for_hf
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=10)
    data_config = {"input_size": (in_chans, size, size), "interpolation": "bilinear", "crop_pct": 1.0,
                   "mean": (0.5,) * in_chans, "std": (0.25,) * in_chans}
    save_for_hf(model, str(folder), model_args={"in_chans": in_chans, "num_classes": 10}, data_config=data_config,
                safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def timm_dir(tmp_path_factory) -> Path:
    """A tiny timm ResNet (1 channel, 16x16 input) saved as a ``local-dir:`` folder."""
    return save_timm(tmp_path_factory.mktemp("timm_resnet"))


def write_images(folder: Path, count: int = 3, size: int = 16, mode: str = "L") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        shape = (size, size) if mode == "L" else (size, size, len(mode))
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_dir(tmp_path) -> Path:
    write_images(tmp_path / "targets")
    return tmp_path / "targets"


def build_module(pixel_prior: Path, timm_dir: Path, **kwargs):
    """A FeatureInversion on the tiny models with few steps."""
    from lit_featinv import DiffusionPrior, FeatureInversion, TimmExtractor
    options = dict(num_inference_steps=4, recurrence=2, guidance_scale=0.5, progress=False)
    options.update(kwargs)
    scheduler = options.pop("scheduler", "diffusers.DDIMScheduler")
    return FeatureInversion(DiffusionPrior(str(pixel_prior), scheduler=scheduler),
                            TimmExtractor(f"local-dir:{timm_dir}"), **options)


def batch_of(folder: Path, limit: int | None = None) -> dict:
    from lit_featinv.data import TargetData
    data = TargetData(images=str(folder), limit=limit)
    data.setup()
    return next(iter(data.predict_dataloader()))

