"""Stable Diffusion priors on a tiny SD-like folder (no downloads): loading, parity with diffusers, offline errors."""
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from diffusers import DDIMScheduler, StableDiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from conftest import ROOT, write_images
from lit_featinv.errors import ConfigError
from lit_featinv import FeatureInversion, StableDiffusionPrior, TimmExtractor, UNetGradient
from lit_featinv.models import priors
from lit_featinv.models.priors import decode_latents, encode_latents, encode_prompt
from lit_featinv.app.cli import main
from lit_featinv.method.sampling import sample_seed


def test_prompt_is_encoded_once_and_the_text_encoder_dropped(sd_prior):
    prior = StableDiffusionPrior(str(sd_prior))
    assert prior.sample_shape == (4, 8, 8)
    assert prior.prompt_embeds.shape == (1, 16, 32)
    assert {name for name, _ in prior.named_children()} == {"unet", "vae"}
    assert "prompt_embeds" not in prior.state_dict()
    assert prior.unet_kwargs(3)["encoder_hidden_states"].shape == (3, 16, 32)
    with torch.no_grad():
        image = prior.decode(prior.denoise(torch.randn(2, 4, 8, 8), torch.tensor(500)))
    assert image.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("version, prompt", [("sd_prior", ""), ("sd_prior", "lower newer"), ("sd2_prior", "")])
def test_unguided_loop_reproduces_the_diffusers_pipeline(request, timm_dir, version, prompt):
    """SD 1.x (epsilon) and SD 2.x (v-prediction) folders: w = 0, K = 1 is StableDiffusionPipeline, no CFG."""
    sd_prior = request.getfixturevalue(version)
    prior = StableDiffusionPrior(str(sd_prior), prompt=prompt)
    assert prior.scheduler.config.prediction_type == ("v_prediction" if version == "sd2_prior" else "epsilon")
    module = FeatureInversion(prior, TimmExtractor(f"local-dir:{timm_dir}"), num_inference_steps=10, guidance=UNetGradient(scale=0.0),
                              recurrence=1, progress=False)
    seed = sample_seed(0, "x", 0)
    with torch.no_grad():
        ours = module.generate(torch.zeros(1, module.extractor(torch.zeros(1, 1, 16, 16)).shape[1]), [seed])["image"]
    scheduler = DDIMScheduler.from_pretrained(sd_prior, subfolder="scheduler")
    pipe = StableDiffusionPipeline.from_pretrained(sd_prior, scheduler=scheduler, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    latents = randn_tensor((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed))
    theirs = pipe(prompt, num_inference_steps=10, guidance_scale=1.0, latents=latents, output_type="np").images
    assert np.abs(ours.clamp(0, 1).permute(0, 2, 3, 1).numpy() - theirs).max() <= 1e-4


def test_gradient_checkpointing_gives_the_same_gradient(sd_prior):
    grads = []
    for checkpointing in (False, True):
        prior = StableDiffusionPrior(str(sd_prior), gradient_checkpointing=checkpointing)
        assert prior.unet.is_gradient_checkpointing == prior.vae.is_gradient_checkpointing == checkpointing
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
        prior.decode(prior.denoise(z, torch.tensor(500))).square().sum().backward()
        grads.append(z.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_guided_bf16_autocast_runs(sd_prior, timm_dir):
    module = FeatureInversion(StableDiffusionPrior(str(sd_prior)), TimmExtractor(f"local-dir:{timm_dir}"),
                              num_inference_steps=2, recurrence=2, progress=False)
    module.on_predict_start()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module.generate(torch.randn(1, module.feature_dim), [0])
    assert out["image"].dtype == torch.float32 and torch.isfinite(out["image"]).all()


def test_unreachable_hub_id_fails_at_start_up_naming_the_key(offline_hub):
    expected = (r"model.prior.pretrained: cannot load 'nobody/no-such-model'.*"
                r"point model.prior.pretrained at the local folder")
    with pytest.raises(ConfigError, match=expected):
        StableDiffusionPrior("nobody/no-such-model")
    with pytest.raises(ConfigError, match=r"\(text_encoder/\) for the prior: it is not in the Hugging Face cache"):
        encode_prompt("nobody/no-such-model")


def test_folder_without_tokenizer_is_an_error(sd_prior, tmp_path):
    folder = shutil.copytree(sd_prior, tmp_path / "sd", ignore=shutil.ignore_patterns("tokenizer"))
    with pytest.raises(ConfigError, match="model.prior.pretrained: .* has no usable tokenizer/"):
        StableDiffusionPrior(str(folder))


def sd_config(sd_prior, extractor: dict, data: dict) -> dict:
    return {
        "model": {"class_path": "lit_featinv.FeatureInversion", "init_args": {
            "prior": {"class_path": "lit_featinv.StableDiffusionPrior", "init_args": {"pretrained": str(sd_prior)}},
            "extractor": extractor, "num_inference_steps": 2, "recurrence": 2, "samples_per_target": 1,
            "progress": False}},
        "data": {"class_path": "lit_featinv.TargetData", "init_args": {"batch_size": 2, **data}},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False},
    }


def run_predict(tmp_path, config: dict) -> list[dict]:
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    main(["predict", "--config", str(tmp_path / "run.yaml"), "--writer.output_dir", str(tmp_path / "out"),
          "--trainer.default_root_dir", str(tmp_path)])
    return [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extractor", ["open_clip", "torchvision", "timm"])
def test_predict_end_to_end(sd_prior, open_clip_name, timm_dir, tmp_path, extractor):
    write_images(tmp_path / "targets", count=2, size=20, mode="RGB")
    extractors = {
        "open_clip": {"class_path": "lit_featinv.OpenClipExtractor",
                      "init_args": {"model_name": open_clip_name, "pretrained": None, "preprocess": {"quantize": True}}},
        "torchvision": {"class_path": "lit_featinv.TorchvisionExtractor",
                        "init_args": {"model_name": "resnet18", "weights": None, "preprocess": {"quantize": True}}},
        "timm": {"class_path": "lit_featinv.TimmExtractor", "init_args": {"model_name": f"local-dir:{timm_dir}"}},
    }
    rows = run_predict(tmp_path, sd_config(sd_prior, extractors[extractor], {"images": str(tmp_path / "targets")}))
    assert [r["id"] for r in rows] == ["img0", "img1"]
    assert all(r["nfe"] == 4 and np.isfinite(r["cosine"]) for r in rows)
    assert (tmp_path / "out" / "images" / "img0_0.png").exists()


def test_text_targets_end_to_end(sd_prior, open_clip_name, tmp_path):
    (tmp_path / "prompts.txt").write_text("a photo of a dog\n\nlower newer\n")
    extractor = {"class_path": "lit_featinv.OpenClipExtractor", "init_args": {"model_name": open_clip_name}}
    rows = run_predict(tmp_path, sd_config(sd_prior, extractor, {"prompts": str(tmp_path / "prompts.txt")}))
    assert [(r["id"], r["target_source"]) for r in rows] == [("prompt_00000", "a photo of a dog"),
                                                              ("prompt_00001", "lower newer")]
    assert all(np.isfinite(r["cosine"]) and "target_image" not in r for r in rows)


@pytest.mark.parametrize("preset,extractor", [("clip_rn50", {"model_name": "OPEN_CLIP", "pretrained": None}),
                                              ("resnet50_fast", {"model_name": "resnet18", "weights": None})])
def test_paper_presets_run_with_tiny_components(sd_prior, open_clip_name, tmp_path, preset, extractor):
    """The shipped presets, with tiny models swapped in and the loop cut short, run end to end on the CPU."""
    write_images(tmp_path / "targets", count=1, size=20, mode="RGB")
    extractor = {k: open_clip_name if v == "OPEN_CLIP" else v for k, v in extractor.items()}
    overrides = {"model": {"init_args": {
        "prior": {"init_args": {"pretrained": str(sd_prior)}}, "extractor": {"init_args": extractor},
        "num_inference_steps": 2, "early_steps": 1, "early_recurrence": 2, "recurrence": 1, "samples_per_target": 1,
        "progress": False}},
        "data": {"init_args": {"images": str(tmp_path / "targets")}},
        "trainer": {"accelerator": "cpu", "precision": "32", "enable_progress_bar": False}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(overrides))
    main(["predict", "--config", str(ROOT / "configs" / "paper" / f"{preset}.yaml"), "--config",
          str(tmp_path / "tiny.yaml"), "--writer.output_dir", str(tmp_path / "out"),
          "--trainer.default_root_dir", str(tmp_path)])
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["nfe"] == 3 and np.isfinite(rows[0]["cosine"])


def test_the_vae_configs_latents_mean_and_std_are_applied_as_the_sdxl_pipeline_does():
    """A VAE config with ``latents_mean`` / ``latents_std`` (Playground v2.5): decoded as StableDiffusionXLPipeline
    decodes (``z * std / scaling_factor + mean``), encoded as its img2img pipeline encodes (the inverse)."""
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    mean, std = [-1.6574, 1.886, -1.383, 2.5155], [8.4927, 5.9022, 6.5498, 5.2299]  # Playground v2.5's VAE config
    vae = AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16, scaling_factor=0.5,
                        latents_mean=mean, latents_std=std).eval()
    mean, std = torch.tensor(mean).view(1, 4, 1, 1), torch.tensor(std).view(1, 4, 1, 1)
    z, image = torch.randn(2, 4, 8, 8), torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(decode_latents(vae, z), vae.decode(z * std / 0.5 + mean).sample)
        torch.testing.assert_close(encode_latents(vae, image), (vae.encode(image).latent_dist.mean - mean) * 0.5 / std)


def test_a_diffusers_older_than_the_floor_is_one_line(monkeypatch):
    """The floor is pyproject's; an older diffusers (no ``AutoModel``) stops in one line naming both versions."""
    import diffusers
    assert f'"diffusers>={priors.DIFFUSERS_FLOOR}"' in (ROOT / "pyproject.toml").read_text()
    monkeypatch.setattr(diffusers, "__version__", "0.32.2")
    with pytest.raises(ImportError, match=rf"^lit_featinv needs diffusers>={priors.DIFFUSERS_FLOOR} .*0.32.2") as err:
        priors.check_diffusers()
    assert "\n" not in str(err.value)
    monkeypatch.setattr(diffusers, "__version__", priors.DIFFUSERS_FLOOR)
    priors.check_diffusers()
