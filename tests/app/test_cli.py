import json
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT, cli_config, documentation
from lit_featinv import TimmExtractor
from lit_featinv.app.cli import NOISE, main
from lit_featinv.runs.images import load_image

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_parses_through_the_cli(config, capsys):
    with pytest.raises(SystemExit) as done:
        main(["predict", "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["inference_mode"] is False
    assert printed["return_predictions"] is False
    assert printed["model"]["class_path"].startswith("lit_featinv.")


def test_null_on_the_command_line_reaches_nested_classes(capsys):
    """``null`` for a key of the extractor or the prior (classes inside the model's init_args) is None, not 'None'."""
    config = ROOT / "configs" / "fmnist" / "latent_resnet.yaml"
    with pytest.raises(SystemExit):
        main(["predict", "--config", str(config), "--model.init_args.extractor.init_args.layer", "layer3",
              "--model.init_args.extractor.init_args.layer=null", "--model.init_args.prior.init_args.vae_upcast",
              "false", "--model.init_args.prior.init_args.vae_upcast", "null",
              "--model.init_args.extractor.init_args.pool", "max", "--data.init_args.features", "null",
              "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert printed["extractor"]["init_args"]["layer"] is None and printed["extractor"]["init_args"]["pool"] == "max"
    assert printed["prior"]["init_args"]["vae_upcast"] is None
    assert printed["extractor"]["class_path"] == "lit_featinv.TimmExtractor"


def test_predict_writes_images_grids_and_metrics_measured_on_the_saved_png(tmp_path, pixel_prior, timm_dir, image_dir):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, image_dir)))
    root = tmp_path / "out"
    main(["predict", "--config", str(cfg), "--trainer.default_root_dir", str(root)])
    out = root
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"]) for r in rows] == [(f"img{i}", j) for i in range(3) for j in range(2)]
    assert (root / "config.yaml").exists()
    ext = TimmExtractor(f"local-dir:{timm_dir}")
    for r in rows:
        assert {"id", "image", "best_image", "target_image", "cosine", "sq_l2", "rel_l2", "best_cosine", "best_sq_l2",
                "best_rel_l2", "nfe", "seconds"} <= set(r)
        assert r["nfe"] == r["unet_backward"] == 6 and r["image"] == f"images/{r['id']}_{r['sample']}.png"
        with torch.no_grad():
            f = ext(load_image(out / r["image"])[None])[0]
            target = ext(load_image(r["target_image"])[None])[0]
        assert abs(torch.nn.functional.cosine_similarity(f, target, dim=0).item() - r["cosine"]) < 1e-5
        assert abs((f - target).pow(2).sum().item() - r["sq_l2"]) < 1e-4 * max(1.0, r["sq_l2"])
        assert (out / r["best_image"]).exists()
    grid = load_image(out / "grids" / "img0.png")  # title | target, 2 generations (16 px at 6x) | their cosines
    assert grid.shape[-2:] == (14 + 96 + 14, 3 * 96 + 2 * 2)
    target = load_image(rows[0]["target_image"])
    tile = grid[:, 14:14 + 96, :96]
    assert torch.equal(tile, target.repeat_interleave(6, 1).repeat_interleave(6, 2).expand_as(tile))
    assert not list(out.rglob(".tmp-*"))

    # a second run of the same config resumes it: everything is done, nothing is generated or written again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    main(["predict", "--config", str(cfg), "--trainer.default_root_dir", str(root)])
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 6
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before


def test_command_line_overrides_and_module_entry_point(tmp_path, pixel_prior, timm_dir, image_dir):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, image_dir)))
    result = subprocess.run([sys.executable, "-m", "lit_featinv", "predict", "--config", str(cfg),
                             "--model.init_args.samples_per_target", "1", "--data.init_args.limit", "1",
                             "--writer.output_dir", str(tmp_path / "w"),
                             "--trainer.default_root_dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "metrics in" in result.stdout
    assert len((tmp_path / "w" / "metrics.jsonl").read_text().splitlines()) == 1
    assert not [text for text in NOISE if text in result.stderr]  # third-party tips and deprecation notes: dropped


def test_top_level_help_imports_no_torch_and_names_the_subcommands():
    code = ("import sys; from lit_featinv.app.console import main; main(['--help']); "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'heavy imports'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predict" in result.stdout and "report" in result.stdout and "presets" in result.stdout
    bare = subprocess.run([sys.executable, "-m", "lit_featinv"], capture_output=True, text=True, cwd=ROOT)
    assert bare.returncode == 2 and "usage: lit-featinv {predict,report,presets,encode-prompt}" in bare.stderr


def test_bad_config_value_is_reported(tmp_path, pixel_prior, timm_dir, image_dir, capsys):
    config = cli_config(pixel_prior, timm_dir, image_dir)
    config["model"]["init_args"]["prior"]["init_args"]["pretrained"] = str(tmp_path / "nope")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit, match="model.prior.pretrained: no such file or folder .*nope"):
        main(["predict", "--trainer.default_root_dir", str(tmp_path / "out"), "--config", str(cfg)])
    assert not (tmp_path / "out").exists()  # found before the run folder is made
    config = cli_config(pixel_prior, timm_dir, image_dir)
    config["model"]["init_args"]["recurrence"] = 0
    cfg.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit, match="model.recurrence: 0 is not a count"):  # found when the model is built
        main(["predict", "--trainer.default_root_dir", str(tmp_path / "out"), "--config", str(cfg)])
    assert list((tmp_path / "out").iterdir()) == []  # no lock left, no config.yaml of a run that never started


def readme_yaml(containing: str, indent: int) -> dict:
    """The documentation's first YAML block that contains ``containing``, parsed (its lines less ``indent`` spaces)."""
    blocks = [b.split("```", 1)[0] for b in documentation().split("```yaml\n")[1:]]
    block = next(b for b in blocks if containing in b)
    return yaml.safe_load("\n".join(line[indent:] for line in block.splitlines()))


def test_readme_guidance_example_runs(tmp_path, pixel_prior, timm_dir, image_dir):
    config = cli_config(pixel_prior, timm_dir, image_dir)
    config["model"]["init_args"]["guidance"] = readme_yaml("lit_featinv.UNetGradient", indent=4)["guidance"]
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(config))
    main(["predict", "--config", str(tmp_path / "g.yaml"), "--trainer.default_root_dir", str(tmp_path / "out")])
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["model"]["init_args"]["guidance"] == {
        "class_path": "lit_featinv.UNetGradient", "init_args": {"scale": 0.5, "start": 0, "stop": None,
                                                                "rescale": True, "clip_theta": 3.0,
                                                                "allow_negative": False, "decoder": None,
                                                                "decoder_subfolder": None}}


def test_readme_module_extractor_example_parses(tmp_path, pixel_prior, image_dir, capsys):
    snippet = readme_yaml("ModuleExtractor", indent=2)
    config = cli_config(pixel_prior, "unused", image_dir)
    config["model"]["init_args"]["extractor"] = snippet["extractor"]
    del config["model"]["init_args"]["extractor"]["init_args"]["weights"]  # a file only the reader has
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit):
        main(["predict", "--config", str(tmp_path / "m.yaml"), "--print_config"])
    assert "torchvision.models.resnet.Bottleneck" in capsys.readouterr().out


def test_two_processes_give_the_same_images_as_one(tmp_path, pixel_prior, timm_dir):
    """DDP on 2 CPU processes: every sample is written once, by id, with the same pixels as a 1-process run."""
    from conftest import write_images
    images = tmp_path / "targets"
    write_images(images, count=3)
    cfg = tmp_path / "run.yaml"
    config = cli_config(pixel_prior, timm_dir, images)
    config["data"]["init_args"]["batch_size"] = 1
    cfg.write_text(yaml.safe_dump(config))
    outputs = {}
    for devices in (1, 2):
        out = tmp_path / f"dev{devices}"
        result = subprocess.run([sys.executable, "-m", "lit_featinv", "predict", "--config", str(cfg),
                                 "--trainer.devices", str(devices), "--trainer.strategy", "ddp" if devices > 1 else "auto",
                                 "--trainer.default_root_dir", str(out)], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        outputs[devices] = {(r["id"], r["sample"]): load_image(out / r["image"]) for r in rows}
    assert sorted(outputs[1]) == sorted(outputs[2]) and len(outputs[1]) == 6
    for key, image in outputs[1].items():
        assert (image - outputs[2][key]).abs().max() <= 1 / 255


def test_reported_metrics_are_float32_under_bf16_mixed(tmp_path, pixel_prior, timm_dir, image_dir):
    """Under bf16-mixed (here with the extractor's guidance pass in bf16 too), the cosine reported for a saved image
    is the float32 cosine of that PNG to the float32 target feature, as a 32-true run computes it."""
    config = cli_config(pixel_prior, timm_dir, image_dir)
    config["model"]["init_args"]["extractor"]["init_args"]["autocast"] = True
    config["trainer"]["precision"] = "bf16-mixed"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path)])
    out = tmp_path
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ext = TimmExtractor(f"local-dir:{timm_dir}", autocast=True)
    worst_bf16 = 0.0
    for r in rows:
        for name in ("image", "best_image"):
            image, target = load_image(out / r[name])[None], load_image(r["target_image"])[None]
            cosine = torch.nn.functional.cosine_similarity(ext.measure(image), ext.measure(target)).item()
            assert abs(cosine - r["cosine" if name == "image" else "best_cosine"]) <= 1e-4
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # what a bf16 measurement would say
                bf16 = torch.nn.functional.cosine_similarity(ext(image), ext(target)).item()
            worst_bf16 = max(worst_bf16, abs(bf16 - cosine))
    assert worst_bf16 > 1e-4  # so the 1e-4 above tells float32 from bf16 metrics


def test_preprocess_override_it_cannot_take_is_one_line(tmp_path, pixel_prior, timm_dir, image_dir):
    config = cli_config(pixel_prior, timm_dir, image_dir)
    config["model"]["init_args"]["extractor"]["init_args"]["preprocess"] = {"resize": 8, "crop": 16}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--trainer.default_root_dir", str(tmp_path / "out"), "--config", str(tmp_path / "bad.yaml")])
    assert str(stop.value) == ("lit-featinv: error: model.extractor.preprocess.crop: [16, 16] is larger than the "
                               "resize to 8: the crop must fit inside the resized image")
    with pytest.raises(SystemExit) as stop:  # from the command line too
        main(["predict", "--trainer.default_root_dir", str(tmp_path / "out"), "--config", str(tmp_path / "bad.yaml"), "--model.init_args.extractor.init_args.preprocess",
              '{"resize": 16, "crop": 16, "interpolation": "lanczos"}'])
    assert str(stop.value).startswith("lit-featinv: error: model.extractor.preprocess.interpolation: 'lanczos' is not")


@pytest.mark.parametrize("args, message", [
    (["--model.init_args.guidance.class_path", "lit_featinv.Nope"],
     "model.guidance: cannot use class_path 'lit_featinv.Nope': module 'lit_featinv' has no attribute 'Nope'"),
    (["--model.init_args.recurrence", "abc"], "model.recurrence: 'abc' is none of int, list[int], dict[int | str, int]"),
    (["--trainer.nope", "1"], "unrecognized arguments: --trainer.nope 1"),
    (["--model.init_args.num_inference_step", "3"], "model: cannot use class_path 'lit_featinv.FeatureInversion': "
     "Option 'num_inference_step' is not accepted; did you mean 'num_inference_steps'?"),
    (["--model.init_args.guidance.init_args.scal", "2"], "model.guidance: cannot use class_path "
     "'lit_featinv.UNetGradient': Option 'scal' is not accepted; did you mean 'scale'?"),
    (["--trainer.devicez", "2"], "unrecognized arguments: --trainer.devicez 2; did you mean '--trainer.devices'?"),
])
def test_what_the_config_parser_refuses_is_one_line(args, message):
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", str(ROOT / "configs" / "quickstart.yaml"), *args])
    assert str(stop.value) == f"lit-featinv: error: {message}"


def test_a_feature_target_gets_a_labelled_tile_in_its_grid(tmp_path, pixel_prior, timm_dir, image_dir):
    ext = TimmExtractor(f"local-dir:{timm_dir}")
    torch.save(ext.measure(load_image(next(image_dir.iterdir()))[None])[0], tmp_path / "f.pt")
    cfg = cli_config(pixel_prior, timm_dir, image_dir)
    cfg["data"]["init_args"] = {"features": str(tmp_path / "f.pt")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "out")])
    grid = load_image(tmp_path / "out" / "grids" / "f.png")
    assert grid.shape[-2:] == (14 + 96 + 14, 3 * 96 + 2 * 2)
    placeholder = grid[:, 14:14 + 96, :96]
    assert (placeholder == 230 / 255).float().mean() > 0.8 and (placeholder < 0.5).any()  # grey, with its text


@pytest.mark.parametrize("where", ["file", "text", "flag"])
def test_the_old_key_backbone_stops_in_one_line_before_anything_loads(where, tmp_path, pixel_prior, timm_dir,
                                                                       image_dir, monkeypatch):
    """``model.backbone`` was renamed ``model.prior``: a config file, a config given as text or a flag that still says
    backbone stops at start-up with one line naming the new key; no model is loaded."""
    import lit_featinv.models.priors
    monkeypatch.setattr(lit_featinv.models.priors.AutoModel, "from_pretrained",
                        lambda *a, **k: pytest.fail("a model was loaded"))
    config = cli_config(pixel_prior, timm_dir, image_dir)
    old = {"backbone" if key == "prior" else key: value for key, value in config["model"]["init_args"].items()}
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(config | {"model": {**config["model"], "init_args": old}}))
    args = {"file": ["--config", str(tmp_path / "old.yaml")],
            "text": ["--config", yaml.safe_dump(config | {"model": {**config["model"], "init_args": old}})],
            "flag": ["--config", "quickstart", "--model.init_args.backbone.init_args.pretrained", str(pixel_prior)]}
    with pytest.raises(SystemExit) as stop:
        main(["predict", *args[where]])
    text = str(stop.value)
    assert text.startswith("lit-featinv: error: model.backbone was renamed model.prior: ") and "\n" not in text
    assert ("--model.init_args.prior.init_args.pretrained" if where == "flag" else "write prior: for backbone:") in text


def test_the_old_key_exits_1_from_the_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lit_featinv", "predict", "--config", "quickstart",
                           "--model.init_args.backbone.init_args.scheduler", "diffusers.DDPMScheduler"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(
        "lit-featinv: error: model.backbone was renamed model.prior")
