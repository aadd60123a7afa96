"""Every shipped preset runs end to end through ``lit-featinv predict`` on tiny models: the preset file itself, with
only its model sources swapped for tiny local ones that carry the real models' scheduler configs (and, to keep it
fast, fewer iterations per step in the authors' 1000-step presets, and one target), over all of its steps."""
import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import ROOT, ZOO, documentation, register_tiny_clip_vit, save_pixel_prior, save_timm, write_images
from lit_featinv import FeatureInversion
from lit_featinv.config import import_object
from lit_featinv.method import noise_optimization
from lit_featinv.models.priors import FLOW
from lit_featinv.app.cli import main

from tiny_pipelines import (FLUX_SCHNELL_SCHEDULER, SD35_TURBO_SCHEDULER, SDXL_TURBO_SCHEDULER, save_flux, save_sd3,
                            save_sdxl)

PRESETS = sorted(p.relative_to(ROOT / "configs").as_posix()[:-5] for p in (ROOT / "configs").rglob("*.yaml"))
EARLY_RECURRENCE = 2  # instead of the paper's 1000 for the first steps
LONG_RECURRENCE = 2  # instead of K = 8 in the 1000-step presets (their schedule, every step of it, stays)


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory, sd_prior, open_clip_name, latent_prior):
    """Tiny stand-ins for each preset's model sources; the zoo stand-ins carry the zoo models' scheduler configs."""
    folder = tmp_path_factory.mktemp("tiny_sources")
    pixel = save_pixel_prior(folder / "pixel")
    latent = shutil.copytree(latent_prior, folder / "latent")
    for tiny, zoo in ((pixel, "fmnist-ddpm"), (latent, "fmnist-ldm")):
        shutil.copy(ZOO / zoo / "scheduler" / "scheduler_config.json", tiny / "scheduler" / "scheduler_config.json")
    return {
        "CompVis/stable-diffusion-v1-4": str(sd_prior),  # SD 1.x's own scheduler config (steps_offset 1, PNDM)
        "assets/zoo/fmnist-ddpm": str(pixel), "assets/zoo/fmnist-ldm": str(latent),
        "local-dir:assets/zoo/fmnist-resnet10t": f"local-dir:{save_timm(folder / 'resnet', 'test_resnet')}",
        "local-dir:assets/zoo/fmnist-vit-tiny": f"local-dir:{save_timm(folder / 'vit', 'test_vit', img_size=16, patch_size=4)}",
        "RN50-quickgelu": open_clip_name, "resnet50": "tiny_resnet", "vit_h_14": "tiny_vit",  # (tests/conftest.py)
    }


@pytest.fixture(scope="module")
def modern_sources(tmp_path_factory) -> dict:
    """Tiny stand-ins for the modern presets' sources (built only for them): SDXL, SD 3.5 and FLUX.1-dev pipeline
    folders and their few-step models' (SDXL-Turbo, SD 3.5 Large Turbo, FLUX.1-schnell) with the real scheduler configs (tests/tiny_pipelines.py), a random timm ViT of DINOv2's
    architecture (patch 14, 28 px) and a random open_clip ViT (patch 14, 28 px) registered by name."""
    folder = tmp_path_factory.mktemp("modern_sources")
    register_tiny_clip_vit(folder)
    dinov2 = save_timm(folder / "dinov2", "vit_base_patch14_dinov2", in_chans=3, size=28, img_size=28, embed_dim=32,
                       depth=1, num_heads=2)
    return {"stabilityai/stable-diffusion-xl-base-1.0": str(save_sdxl(folder / "sdxl")),
            "stabilityai/stable-diffusion-3.5-medium": str(save_sd3(folder / "sd35")),
            "black-forest-labs/FLUX.1-dev": str(save_flux(folder / "flux")),
            "stabilityai/sdxl-turbo": str(save_sdxl(folder / "sdxl_turbo", SDXL_TURBO_SCHEDULER)),
            "stabilityai/stable-diffusion-3.5-large-turbo": str(save_sd3(folder / "sd35_turbo", SD35_TURBO_SCHEDULER)),
            "black-forest-labs/FLUX.1-schnell": str(save_flux(folder / "schnell", False, FLUX_SCHNELL_SCHEDULER)),
            "vit_base_patch14_dinov2.lvd142m": f"local-dir:{dinov2}", "ViT-L-14": "tiny-clip-vit",
            "ViT-SO400M-14-SigLIP-384": "tiny-clip-vit"}


def tiny_overrides(preset: dict, sources: dict, images) -> dict:
    """The preset's model sources -> tiny local ones (weights of the hub models: none); nothing else changes but the
    early recurrence, K of the 1000-step presets, the targets (the first one; a preset's constructed targets or
    feature files stay) and the device."""
    model = preset["model"]["init_args"]
    prior, extractor = model["prior"]["init_args"], model["extractor"]["init_args"]
    sources = sources | {key.replace("assets/", up + "assets/"): tiny for key, tiny in sources.items()
                         for up in ("../", "../../")}  # the zoo as the presets name it: relative to the file
    exact = "matrix" in extractor  # the Gaussian-mixture world: its real (small) mixture and linear feature stay
    if "base" in extractor or exact:  # an SAE on the zoo ResNet's 512-d feature: the real (small) zoo ResNet stays
        tiny_extractor = {}
    else:
        tiny_extractor = {"model_name": sources[extractor["model_name"]]}
    if "weights" in extractor and "base" not in extractor:  # torchvision: the tiny models take 32 px
        tiny_extractor |= {"weights": None, "preprocess": {**(extractor.get("preprocess") or {}), "resize": 32,
                                                           "crop": 32}}  # the preprocessing stays
    if isinstance(extractor.get("pretrained"), str):  # open_clip weight tag (timm's is a bool: the stand-in's own)
        tiny_extractor["pretrained"] = None
    tiny_prior = {} if exact else {"pretrained": sources[prior["pretrained"]]}
    if prior.get("resolution"):  # the tiny pipelines' own 16 px, not the real model's
        tiny_prior["resolution"] = None
    init_args = {"prior": {"init_args": tiny_prior},
                 "extractor": {"init_args": tiny_extractor}, "progress": False}
    if model.get("early_steps"):
        init_args["early_recurrence"] = EARLY_RECURRENCE
    if model["num_inference_steps"] >= 1000:
        init_args["recurrence"] = LONG_RECURRENCE
    trainer = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
    if model["num_inference_steps"] * model.get("recurrence", 1) > 1000:  # on the CPU bf16 is 1.5x slower than float32:
        trainer["precision"] = "32-true"                           # the long runs in float32, the fast ones as set
    data = {"limit": 1, "batch_size": 1}
    if not {"constructed", "features"} & set(preset["data"]["init_args"]) and not exact:  # targets from the preset's
        data["images"] = str(images)                       # own files (constructed, feature files, 32x32 grey): kept
    return {"model": {"init_args": init_args}, "data": {"init_args": data}, "trainer": trainer}


def expected_nfe(model: dict) -> int:
    """UNet evaluations per image of a preset's ``model.init_args`` as run (its tiny overrides merged in)."""
    steps, early = model["num_inference_steps"], model.get("early_steps", 0)
    sampler = model.get("sampler") or {}
    if sampler.get("class_path") == "lit_featinv.NoiseOptimization":  # every Adam step passes the whole sampler
        return steps * (sampler["init_args"]["optimization_steps"] + 1)
    per_particle = early * model.get("early_recurrence", 1) + (steps - early) * model["recurrence"]
    if import_object(model["prior"]["class_path"], "lit_featinv").prediction == FLOW:  # SD 3, FLUX: sigma 1 first,
        per_particle -= (model.get("early_recurrence", 1) if early else model["recurrence"]) - 1  # one forward
    particles = sampler.get("init_args")  # particles: a saved generation costs its share
    return per_particle * particles["particles"] // model["samples_per_target"] if particles else per_particle


SLOW_PRESETS = ("paper/clip_rn50", "paper/resnet50", "paper/vit_h14", "fmnist/paper_settings")  # 1000 steps x K:
# 55-90 s each on 2 cores; .ci/run runs them in its slow step (pytest -m slow)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_PRESETS else n for n in PRESETS])
def test_preset_runs_end_to_end_on_tiny_models(name, tiny_sources, tmp_path, monkeypatch, request):
    preset = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    write_images(tmp_path / "targets", count=1, size=40, mode="RGB")
    sources = tiny_sources | (request.getfixturevalue("modern_sources") if name.startswith("modern/") else {})
    overrides = tiny_overrides(preset, sources, tmp_path / "targets")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(overrides))
    monkeypatch.chdir(tmp_path)  # the presets' paths are relative to the preset file: any folder runs them
    seen = []
    guided_output, model_input = FeatureInversion.guided_output, noise_optimization.model_input

    def recording(self, scheduler, sample, t, *args, **kwargs):
        seen.append(float(t))
        return guided_output(self, scheduler, sample, t, *args, **kwargs)

    def recording_input(scheduler, sample, t):  # noise optimisation: each pass through the sampler
        seen.append(float(t))
        return model_input(scheduler, sample, t)
    monkeypatch.setattr(FeatureInversion, "guided_output", recording)
    monkeypatch.setattr(noise_optimization, "model_input", recording_input)
    main(["predict", "--config", name, "--config", str(tmp_path / "tiny.yaml"),  # a preset by name
          "--writer.output_dir", str(tmp_path / "out"), "--trainer.default_root_dir", str(tmp_path)])

    model = preset["model"]["init_args"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == model.get("samples_per_target", 1)
    ran = model | overrides["model"]["init_args"] | {"prior": model["prior"]}
    assert all(r["nfe"] == expected_nfe(ran) and np.isfinite(r["cosine"]) for r in rows)
    if "optimization_steps" in (model.get("sampler") or {}).get("init_args", {}):  # the first pass's steps
        seen = seen[:model["num_inference_steps"]]
    steps = [t for i, t in enumerate(seen) if i == 0 or t != seen[i - 1]]
    assert len(steps) == len(set(steps)) == model["num_inference_steps"]  # every step once, in decreasing order
    flow = import_object(model["prior"]["class_path"], "lit_featinv").prediction == FLOW
    top = 1000 if flow else 999  # flow matching: t = 1000 sigma, from sigma 1
    assert steps == sorted(steps, reverse=True) and 0 <= steps[-1] and steps[0] <= top
    if model["num_inference_steps"] == 1000:  # the authors' schedule: 999..0
        assert steps[0] == 999 and steps[-1] == 0
    for r in rows:  # the best image, as saved, is never worse (by model.loss) than the final one (float noise)
        assert r["best_loss"] <= r["loss"] + 1e-5 * abs(r["loss"])


@pytest.mark.parametrize("scheduler, override, message", [
    ("diffusers.DDPMScheduler", {"timestep_spacing": "leading"},
     "DDPMScheduler with 1000 steps (timestep_spacing 'leading', steps_offset 1) gives timestep 1000, outside the "
     "model's 0..999; set timestep_spacing: trailing (or steps_offset: 0) there"),
    ("diffusers.HeunDiscreteScheduler", {}, "repeats timesteps"),
])
def test_a_bad_schedule_stops_before_any_model_is_loaded(tiny_sources, tmp_path, monkeypatch, scheduler, override,
                                                         message):
    """SD 1.x's real scheduler config with "leading" spacing (diffusers' default) gives 1000..1: one line naming
    the key, before the UNet, VAE or network is loaded."""
    import lit_featinv.models.priors
    import lit_featinv.models.extractors

    def no_model_work(*args, **kwargs):
        raise AssertionError("a model was loaded before the schedule was checked")
    monkeypatch.setattr(lit_featinv.models.priors.AutoModel, "from_pretrained", no_model_work)
    monkeypatch.setattr(lit_featinv.models.extractors.Preprocess, "with_overrides", no_model_work)
    preset = yaml.safe_load((ROOT / "configs" / "paper" / "resnet50.yaml").read_text())
    overrides = tiny_overrides(preset, tiny_sources, tmp_path)
    overrides["model"]["init_args"]["prior"]["init_args"] |= {"scheduler": scheduler, "scheduler_config": override}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(overrides))
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", str(ROOT / "configs" / "paper" / "resnet50.yaml"), "--config",
              str(tmp_path / "tiny.yaml")])
    text = str(stop.value)
    assert text.startswith("lit-featinv: error: model.prior.scheduler_config: ") and message in text
    assert "\n" not in text
    if scheduler == "diffusers.DDPMScheduler":  # docs/configs.md shows this line (the documentation: README + docs)
        assert f"\n{text}\n" in documentation()


def test_presets_lists_every_preset_with_what_it_does(capsys):
    from lit_featinv.app.console import main as console
    console(["presets"])
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines if line and not line.startswith("run one")}
    assert sorted(listed) == PRESETS and all(len(summary) > 20 for summary in listed.values())


def test_paths_in_a_config_file_are_relative_to_it(pixel_prior, timm_dir, tmp_path, monkeypatch):
    """Inputs are found beside the config file, from any folder; what is not there stays as given (hub ids, paths
    relative to the current folder), and outputs stay relative to the current folder."""
    from conftest import cli_config
    from lit_featinv import config as presets

    experiment = tmp_path / "experiment"
    write_images(experiment / "targets", count=1)
    shutil.copytree(pixel_prior, experiment / "prior")
    np.save(experiment / "rows.npy", np.zeros((4, 3), dtype="float32"))
    config = cli_config(experiment / "prior", timm_dir, experiment / "targets", num_inference_steps=1, recurrence=1)
    config["model"]["init_args"]["prior"]["init_args"]["pretrained"] = "prior"
    config["data"]["init_args"]["images"] = "targets"
    config["trainer"]["default_root_dir"] = "runs/here"
    (experiment / "run.yaml").write_text(yaml.safe_dump(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    main(["predict", "--config", str(experiment / "run.yaml")])
    assert len((elsewhere / "runs" / "here" / "metrics.jsonl").read_text().splitlines()) == 2
    saved = yaml.safe_load((elsewhere / "runs" / "here" / "config.yaml").read_text())
    assert saved["data"]["init_args"]["images"] == str(experiment / "targets")
    assert saved["model"]["init_args"]["prior"]["init_args"]["pretrained"] == str(experiment / "prior")
    resolve = lambda value: presets.resolve(value, experiment)  # noqa: E731
    assert resolve("local-dir:prior") == f"local-dir:{experiment / 'prior'}"
    assert resolve("rows.npy[3]") == f"{experiment / 'rows.npy'}[3]"
    assert resolve("CompVis/stable-diffusion-v1-4") == "CompVis/stable-diffusion-v1-4"
    assert resolve("not/here") == "not/here" and resolve(0.5) == 0.5 and resolve("a b") == "a b"


def test_a_class_path_in_the_current_folder_is_found_by_the_console_script(pixel_prior, timm_dir, tmp_path):
    import subprocess
    script = shutil.which("lit-featinv")
    if script is None:
        pytest.skip("lit-featinv is not installed")
    from conftest import cli_config
    (tmp_path / "mymodule.py").write_text("from lit_featinv import FeatureInversion\n\n\n"
                                          "class MyInversion(FeatureInversion):\n    pass\n")
    config = cli_config(pixel_prior, timm_dir, tmp_path)
    config["model"]["class_path"] = "mymodule.MyInversion"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run([script, "predict", "--config", "run.yaml", "--print_config"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert yaml.safe_load(done.stdout)["model"]["class_path"] == "mymodule.MyInversion"


def test_the_readme_lists_the_presets_as_the_command_does(capsys):
    """The presets block of docs/configs.md (and the README) is `lit-featinv presets` as printed (it drifts otherwise)."""
    from conftest import documentation
    from lit_featinv.app.console import main as console
    console(["presets"])
    printed = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("run one")]
    assert "```\n" + "\n".join(printed) + "\n```" in documentation()
