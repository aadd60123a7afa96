"""Tiny random models built from configs and saved to temp folders, loaded through the real
``from_pretrained`` / ``local-dir:`` paths: no network, no GPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
torch.set_num_threads(1)  # tiny models: more threads only add overhead, and spin badly on busy shared cores
os.environ.setdefault("OMP_NUM_THREADS", "1")  # ... and the CLI's `threads: auto` keeps that (tests/app/test_threads.py)

ROOT = Path(__file__).resolve().parents[1]


def pages() -> list[Path]:
    """What a user reads: README.md and the documentation site's pages (docs/*.md)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documentation() -> str:
    """The :func:`pages` as one text. Tests that check a block or a message "as the documentation shows it" search
    here, whichever page it is on."""
    return "\n".join(page.read_text() for page in pages())


def headless_chromium(page: Path, *flags: str) -> subprocess.CompletedProcess:
    """Open ``page`` in headless Chromium (1200x900) with ``flags`` (e.g. ``--screenshot=FILE``, ``--dump-dom``): its
    run, text out. No Chromium: the test skips, or fails in CI (``.ci/run`` installs it)."""
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={page.parent / 'ud'}",
                           "--window-size=1200,900", *flags, page.resolve().as_uri()], capture_output=True, text=True,
                          timeout=120)


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


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """No hub and an empty Hugging Face cache (returned: put repositories in it as models--ORG--NAME/...)."""
    import huggingface_hub
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


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


def save_tiny_decoder(folder: Path, latent_channels: int = 4, upsamplings: int = 1, channels: int = 1) -> Path:
    """A tiny diffusers ``AutoencoderTiny`` (TAESD's architecture and defaults, narrower)."""
    from diffusers import AutoencoderTiny
    torch.manual_seed(0)
    blocks = upsamplings + 1
    AutoencoderTiny(in_channels=channels, out_channels=channels, latent_channels=latent_channels,
                    encoder_block_out_channels=(8,) * blocks, decoder_block_out_channels=(8,) * blocks,
                    num_encoder_blocks=(1,) * blocks, num_decoder_blocks=(1,) * blocks).save_pretrained(folder)
    return folder


def save_timm(folder: Path, name: str = "test_resnet", in_chans: int = 1, size: int = 16, **model_args) -> Path:
    import timm
    from timm.models._hub import save_for_hf
    torch.manual_seed(0)
    model_args = {"in_chans": in_chans, "num_classes": 10, **model_args}
    model = timm.create_model(name, pretrained=False, **model_args)
    data_config = {"input_size": (in_chans, size, size), "interpolation": "bilinear", "crop_pct": 1.0,
                   "mean": (0.5,) * in_chans, "std": (0.25,) * in_chans}
    save_for_hf(model, str(folder), model_args=model_args, data_config=data_config,
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


@pytest.fixture
def tracked(monkeypatch) -> list[dict]:
    """Every best-image tracking call of the guided loop, in order: the rows in the batch, the candidates as they will
    be saved, the first candidate's cosine."""
    import lit_featinv.module
    from lit_featinv.method.measure import to_uint8, track_best
    calls = []

    def recording(extractor, loss, best, candidates, target, step, rows):
        value, cosine = track_best(extractor, loss, best, candidates, target, step, rows)
        calls.append({"rows": rows.tolist(), "candidates": [to_uint8(c) for c in candidates], "cosine": cosine.tolist()})
        return value, cosine
    monkeypatch.setattr(lit_featinv.module, "track_best", recording)
    return calls


def build_module(pixel_prior: Path, timm_dir: Path, **kwargs):
    """A FeatureInversion on the tiny models with few steps; ``w`` (0.5) and ``guidance_class`` (UNetGradient) make its
    guidance."""
    from lit_featinv import DiffusionPrior, FeatureInversion, TimmExtractor, UNetGradient
    options = dict(num_inference_steps=4, recurrence=2, progress=False)
    options.update(kwargs)
    options.setdefault("guidance", (options.pop("guidance_class", UNetGradient))(scale=options.pop("w", 0.5)))
    scheduler = options.pop("scheduler", "diffusers.DDIMScheduler")
    extractor = TimmExtractor(f"local-dir:{timm_dir}", preprocess=options.pop("preprocess", None))
    return FeatureInversion(DiffusionPrior(str(pixel_prior), scheduler=scheduler), extractor, **options)


def targets_of(module, batch: dict):
    """The module's target features of a batch, as its ``predict_step`` computes them."""
    from lit_featinv.method.targets import target_features
    return target_features(module.extractor, batch, module.device, module.feature_dim)


def mid_step(module, steps: int = 4):
    """The module's scheduler set to ``steps`` steps, with the timestep and signal level of its second step."""
    scheduler = module.prior.scheduler
    scheduler.set_timesteps(steps)
    t = scheduler.timesteps[1]
    return scheduler, t, scheduler.alphas_cumprod[t]


def cli_config(pixel_prior: Path, timm_dir: Path, images: Path, batch_size: int = 2, **model) -> dict:
    """A ``lit-featinv predict`` config on the tiny models: 3 steps, K = 2, w = 0.5, 2 generations per target;
    ``model`` overrides the model's init_args."""
    return {
        "model": {"class_path": "lit_featinv.FeatureInversion", "init_args": {
            "prior": {"class_path": "lit_featinv.DiffusionPrior", "init_args": {"pretrained": str(pixel_prior)}},
            "extractor": {"class_path": "lit_featinv.TimmExtractor", "init_args": {"model_name": f"local-dir:{timm_dir}"}},
            "guidance": {"class_path": "lit_featinv.UNetGradient", "init_args": {"scale": 0.5}},
            "num_inference_steps": 3, "recurrence": 2, "samples_per_target": 2, "progress": False, **model}},
        "data": {"class_path": "lit_featinv.TargetData", "init_args": {"images": str(images), "batch_size": batch_size}},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False},
    }


def batch_of(folder: Path, limit: int | None = None) -> dict:
    from lit_featinv.runs.data import TargetData
    data = TargetData(images=str(folder), limit=limit)
    data.setup()
    return next(iter(data.predict_dataloader()))


TINY_VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>", "low</w>",
              "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>"]


# The scheduler configs the hub serves (scheduler/scheduler_config.json), copied verbatim: CompVis/stable-diffusion-v1-4
# (SD 1.x: PNDM, steps_offset 1) and stabilityai/stable-diffusion-2-1 (SD 2.x: DDIM, v-prediction).
SD1_SCHEDULER = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.7.0.dev0", "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
                 "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
                 "clip_sample": False}
SD2_SCHEDULER = {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
                 "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
                 "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}


def save_stable_diffusion(folder: Path, size: int = 8, v2: bool = False) -> Path:
    """A tiny Stable-Diffusion-like folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/):
    latents 4 x size x size, images 3 x 2size x 2size, with the real SD 1.x (or, ``v2``, SD 2.x) scheduler config;
    ``v2`` also has SD 2.x's model differences (linear attention projections, per-block head counts, upcast
    attention, GELU text encoder)."""
    import json
    from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    files = folder / "tokenizer"
    files.mkdir(parents=True)
    (files / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(TINY_VOCAB)}))
    (files / "merges.txt").write_text("#version: 0.2\nl o\nlo w</w>\ne r</w>\n")
    tokenizer = CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, intermediate_size=37,
                                                num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=16,
                                                bos_token_id=21, eos_token_id=22, pad_token_id=22,
                                                hidden_act="gelu" if v2 else "quick_gelu"))
    sd2 = dict(use_linear_projection=True, attention_head_dim=(2, 4), upcast_attention=True) if v2 else {}
    unet = UNet2DConditionModel(sample_size=size, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **{"attention_head_dim": 4} | sd2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=2 * size, scaling_factor=0.18215)
    scheduler_config = SD2_SCHEDULER if v2 else SD1_SCHEDULER
    scheduler = (DDIMScheduler if v2 else PNDMScheduler).from_config(scheduler_config)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2))  # verbatim
    return folder


@pytest.fixture(scope="session")
def sd_prior(tmp_path_factory) -> Path:
    """A tiny Stable Diffusion folder: 16x16 RGB images from 8x8x4 latents, empty-prompt text conditioning."""
    return save_stable_diffusion(tmp_path_factory.mktemp("sd_prior"))


@pytest.fixture(scope="session")
def sd2_prior(tmp_path_factory) -> Path:
    """The tiny SD folder with SD 2.x's differences (v-prediction scheduler, linear projections, upcast attention)."""
    return save_stable_diffusion(tmp_path_factory.mktemp("sd2_prior"), v2=True)


@pytest.fixture(scope="session")
def open_clip_name(tmp_path_factory) -> str:
    """A tiny CLIP (modified-ResNet image tower like RN50, 32 px, 16-d embedding) registered with open_clip."""
    import json
    import open_clip
    folder = tmp_path_factory.mktemp("open_clip")
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    (folder / "tiny-clip-rn.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / "tiny-clip-rn.json")
    return "tiny-clip-rn"


def tiny_paper_extractors(open_clip_name: str) -> dict:
    """Stand-ins for the benchmark scripts' paper extractors, by their names: {name: (description, builder)}."""
    from lit_featinv import OpenClipExtractor, TorchvisionExtractor
    return {"clip_rn50": ("tiny open_clip", lambda: OpenClipExtractor(open_clip_name, pretrained=None)),
            "resnet50": ("tiny resnet", lambda: TorchvisionExtractor("tiny_resnet")),
            "vit_h14_518": ("tiny vit", lambda: TorchvisionExtractor("tiny_vit")),
            "vit_h14_518_bf16": ("tiny vit bf16", lambda: TorchvisionExtractor("tiny_vit", autocast=True))}


def register_tiny_torchvision() -> None:
    """``tiny_resnet`` and ``tiny_vit`` in torchvision's model registry (``get_model``), random weights, 32 px, each
    ending in a Linear classifier as torchvision's classifiers do: stand-ins for resnet50 and vit_h_14."""
    from torch import nn
    from torchvision.models import ResNet50_Weights, ViT_H_14_Weights
    from torchvision.models._api import BUILTIN_MODELS, register_model
    from torchvision.models.vision_transformer import VisionTransformer

    def tiny_resnet(*, weights: ResNet50_Weights | None = None, progress: bool = True, **kwargs):
        torch.manual_seed(0)
        return nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 8, 3, 2, 1), bn1=nn.BatchNorm2d(8), relu=nn.ReLU(),
                                         layer1=nn.Conv2d(8, 16, 3, 2, 1), avgpool=nn.AdaptiveAvgPool2d(1),
                                         flatten=nn.Flatten(), fc=nn.Linear(16, 10)))

    def tiny_vit(*, weights: ViT_H_14_Weights | None = None, progress: bool = True, **kwargs):
        torch.manual_seed(0)
        return VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)

    tiny_resnet.__annotations__["weights"] = ResNet50_Weights | None  # objects, not strings: get_model_weights reads them
    tiny_vit.__annotations__["weights"] = ViT_H_14_Weights | None
    for builder in (tiny_resnet, tiny_vit):
        if builder.__name__ not in BUILTIN_MODELS:
            register_model()(builder)


register_tiny_torchvision()


# ---- runs of the command in another process, and their run folders ----------------------------------------------
def command(cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lit_featinv", "predict", "--config", str(cfg), "--trainer.default_root_dir",
            str(out), *extra]


def start(cfg: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command(cfg, out, *extra), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def lines(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_lines(proc: subprocess.Popen, out: Path, count: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while len(lines(out)) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run wrote nothing"
        time.sleep(0.05)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def snapshot(out: Path) -> dict:
    """Every output file's bytes, each metrics line without its timing, and each generation's (last) trajectory
    line (lines are in the order ranks and resumes wrote them)."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
             if p.is_file() and p.name not in ("metrics.jsonl", "trajectories.jsonl", ".lock", "config.yaml")}
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["trainer"].pop("default_root_dir") == str(out)  # differs between folders
    config["writer"].pop("overwrite")  # how it was started
    rows = sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in lines(out))
    trajectories = {(r["id"], r["sample"]): r for r in map(json.loads, (out / "trajectories.jsonl").read_text().splitlines())}
    trajectories = sorted(json.dumps(r, sort_keys=True) for r in trajectories.values())
    return {"files": files, "rows": rows, "trajectories": trajectories, "config": config}


def assert_same(run: dict, expected: dict, config: bool = True) -> None:
    """The same files with the same bytes, the same metrics lines and (``config``) config.yaml; names what differs."""
    assert sorted(run["files"]) == sorted(expected["files"])
    assert [name for name in expected["files"] if run["files"][name] != expected["files"][name]] == []
    assert run["rows"] == expected["rows"] and run["trajectories"] == expected["trajectories"]
    assert run["config"] == expected["config"] or not config


def register_tiny_clip_vit(folder: Path) -> str:
    """A tiny open_clip ViT (patch 14, 28 px; the modern FLUX preset's ViT-L/14 stand-in) registered by name in
    open_clip; returns the name."""
    import open_clip
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 28, "layers": 1, "width": 32, "patch_size": 14,
                                              "head_width": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    (folder / "tiny-clip-vit.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / "tiny-clip-vit.json")
    return "tiny-clip-vit"
