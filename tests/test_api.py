"""The Python call: a decoder from a preset, a file or a dict, called on images, features or prompts; the same object
under a user's own Trainer; bad input in one line naming the argument."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import ROOT, build_module, cli_config, write_images
from lit_featinv import FeatureInversion, TargetData
from lit_featinv.runs.results import Inversion
from lit_featinv.errors import ConfigError


@pytest.fixture(scope="module")
def decoder(pixel_prior, timm_dir):
    return build_module(pixel_prior, timm_dir, num_inference_steps=3, recurrence=2)


def pixels(images) -> list[bytes]:
    return [np.asarray(image).tobytes() for image in images]


def test_a_call_on_images_returns_pil_images_and_their_metrics(decoder, image_dir):
    decoder.samples_per_target = 2
    try:
        out = decoder(images=str(image_dir))
    finally:
        decoder.samples_per_target = 1
    assert isinstance(out, Inversion)
    assert len(out.images) == len(out.best_images) == len(out.metrics) == 2 * 3
    assert all(isinstance(image, Image.Image) and image.size == (16, 16) for image in out.images)
    assert [(m["id"], m["sample"]) for m in out.metrics] == [(f"img{n}", j) for n in range(3) for j in range(2)]
    assert all(m["status"] == "ok" and -1 <= m["cosine"] <= 1 and m["nfe"] == 3 * 2 for m in out.metrics)
    tensors = decoder(images=str(image_dir), output_type="pt")  # the same generations as float tensors
    assert tensors.images.shape == (3, 1, 16, 16) and tensors.images.dtype == torch.float32
    assert pixels(out.images[::2]) == [(t[0] * 255).round().byte().numpy().tobytes() for t in tensors.images]


def test_pil_images_uint8_and_float_tensors_are_the_same_targets(decoder, image_dir):
    files = sorted(image_dir.iterdir())[:2]
    as_pil = [Image.open(f) for f in files]
    as_uint8 = torch.stack([torch.from_numpy(np.asarray(image))[None] for image in as_pil])
    runs = [decoder(images=as_pil), decoder(images=as_uint8), decoder(images=as_uint8.float() / 255)]
    assert [m["id"] for m in runs[0].metrics] == ["image_00000", "image_00001"]
    assert pixels(runs[0].images) == pixels(runs[1].images) == pixels(runs[2].images)


def test_a_call_on_features_measures_its_images_against_those_features(decoder, image_dir):
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(f))).float()[None] / 255
                          for f in sorted(image_dir.iterdir())[:2]])
    features = decoder.extractor.measure(images)
    out = decoder(features=features, output_type="pt")
    assert [m["id"] for m in out.metrics] == ["feature_00000", "feature_00001"]
    measured = torch.nn.functional.cosine_similarity(decoder.extractor.measure(out.images), features, dim=1)
    assert [m["cosine"] for m in out.metrics] == pytest.approx(measured.tolist(), abs=1e-5)


def test_a_call_works_inside_inference_mode_and_no_grad(decoder, image_dir):
    expected = pixels(decoder(images=str(image_dir)).images)
    with torch.inference_mode():
        assert pixels(decoder(images=str(image_dir)).images) == expected
    with torch.no_grad():
        assert pixels(decoder(images=str(image_dir)).images) == expected


def test_the_same_object_runs_under_a_plain_trainer(decoder, image_dir, tmp_path):
    """Trainer() as a user writes it (inference_mode=True, its logger): predict returns the records, and they are
    the call's generations, byte for byte."""
    from lightning.pytorch import Trainer

    from lit_featinv import InversionWriter
    trainer = Trainer(accelerator="cpu", default_root_dir=tmp_path, callbacks=[InversionWriter(str(tmp_path / "out"))],
                      enable_progress_bar=False)
    batches = trainer.predict(decoder, datamodule=TargetData(images=str(image_dir), batch_size=2))
    records = [r for batch in batches for r in batch]
    assert [r["id"] for r in records] == ["img0", "img1", "img2"]
    assert trainer.predict_loop.inference_mode is False  # the module's setup turned it off: gradients are needed
    call = decoder(images=str(image_dir), batch_size=2)
    assert [r["image"].numpy().tobytes() for r in records] == [r["image"].numpy().tobytes() for r in call.records]
    assert len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"images": "IMAGES", "features": torch.zeros(4)}, "images and features: give exactly one of images, features"),
    ({}, "images: give exactly one of images, features or prompts"),
    ({"images": torch.rand(2, 1, 16, 16) * 2 - 1}, "images[0]: values in [-"),
    ({"images": torch.rand(16, 16)}, "images: a tensor of shape [16, 16]: give [C, H, W] or [B, C, H, W]"),
    ({"images": torch.rand(2, 16, 16, 1)}, "images[0]: a tensor of shape [16, 16, 1]: give [C, H, W]"),
    ({"images": [torch.rand(1, 16, 16), torch.rand(1, 20, 20)]}, "images: the list mixes sizes (16x16, 20x20)"),
    ({"images": []}, "images: an empty list"),
    ({"images": [np.zeros((16, 16))]}, "images: a ndarray: give a path, a PIL image or a tensor"),
    ({"images": "no/such/folder"}, "images: no such file or folder 'no/such/folder'"),
    ({"features": torch.rand(2, 7)}, "features: 7 values per target, but the extractor (model.extractor) gives"),
    ({"features": torch.rand(2, 3, 4)}, "features: shape [2, 3, 4]: give [D] or [N, D]"),
    ({"features": torch.full((3,), float("nan"))}, "features: contains NaN or Inf"),
    ({"features": [1.0, 2.0]}, "features: a list: give a tensor or array"),
    ({"prompts": "a boot"}, "prompts: text targets need an extractor with encode_text"),
    ({"images": "IMAGES", "output_type": "np"}, "output_type: 'np': give 'pil' or 'pt'"),
    ({"images": "IMAGES", "batch_size": 0}, "batch_size: 0 is not a number of targets"),
])
def test_bad_input_is_one_line_naming_the_argument(decoder, image_dir, kwargs, message):
    kwargs = {k: str(image_dir) if isinstance(v, str) and v == "IMAGES" else v for k, v in kwargs.items()}
    with pytest.raises(ConfigError) as err:
        decoder(**kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_from_config_takes_a_file_a_dict_and_overrides(pixel_prior, timm_dir, tmp_path):
    config = cli_config(pixel_prior, timm_dir, tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    from_file = FeatureInversion.from_config(str(tmp_path / "run.yaml"), num_inference_steps=5, samples_per_target=1)
    from_dict = FeatureInversion.from_config(config["model"])
    assert (from_file.num_inference_steps, from_file.recurrence, from_file.samples_per_target) == (5, 2, 1)
    assert from_dict.num_inference_steps == 3 and from_dict.samples_per_target == 2
    with pytest.raises(ConfigError, match=r"^config: needs a model section with class_path"):
        FeatureInversion.from_config({"data": {}})
    louder = Louder.from_config(config, num_inference_steps=2)  # a subclass, from its base's config
    assert type(louder) is Louder and louder.num_inference_steps == 2


class Louder(FeatureInversion):
    """A user's subclass (extension by subclassing)."""


def test_from_config_by_preset_name_and_an_unknown_name_lists_the_presets(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # paths in a preset are relative to its file: any folder works
    decoder = FeatureInversion.from_config("quickstart", num_inference_steps=2, progress=False)
    assert decoder.num_inference_steps == 2 and decoder.recurrence == 4
    out = decoder(images=str(ROOT / "assets" / "fmnist-test32" / "00000_ankle-boot.png"))
    assert out.metrics[0]["id"] == "00000_ankle-boot" and out.images[0].size == (32, 32)
    with pytest.raises(ConfigError) as err:
        FeatureInversion.from_config("quickstrat")
    assert re.match(r"config: 'quickstrat' is neither a file nor a preset .*presets: fmnist/channel, .*quickstart",
                    str(err.value))


def test_images_mixing_sizes_in_a_folder_are_fine(decoder, tmp_path):
    """A folder may mix sizes (the extractor resizes each); only an in-memory list must be of one size."""
    write_images(tmp_path / "a", count=1, size=16)
    write_images(tmp_path / "a" / "b", count=1, size=20)
    assert [m["status"] for m in decoder(images=str(tmp_path / "a")).metrics] == ["ok", "ok"]


def test_the_old_keyword_backbone_is_one_line_naming_prior(pixel_prior, timm_dir):
    from lit_featinv import DiffusionPrior, FeatureInversion, TimmExtractor
    from lit_featinv.errors import ConfigError
    prior, extractor = DiffusionPrior(str(pixel_prior)), TimmExtractor(f"local-dir:{timm_dir}")
    with pytest.raises(ConfigError, match=r"^backbone was renamed prior: FeatureInversion\(prior=\.\.\.\)$"):
        FeatureInversion(backbone=prior, extractor=extractor)
    with pytest.raises(ConfigError, match=r"^backbone was renamed prior: FeatureInversion.from_config\(prior=\.\.\.\)$"):
        FeatureInversion.from_config("quickstart", backbone={"class_path": "lit_featinv.DiffusionPrior"})
    assert FeatureInversion(prior=prior, extractor=extractor, progress=False).prior is prior
