import warnings
import numpy as np
import pytest
import torch
from PIL import Image

from lit_featinv.errors import ConfigError
from lit_featinv.runs.data import TargetData
from lit_featinv.runs.images import load_image


def test_modes_load_to_unit_range(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 7, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    gray16 = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "gray.png")
    assert torch.allclose(load_image(tmp_path / "rgb.png"), torch.from_numpy(rgb).permute(2, 0, 1) / 255)
    assert torch.equal(load_image(tmp_path / "rgba.png"), load_image(tmp_path / "rgb.png"))
    assert torch.allclose(load_image(tmp_path / "g16.png")[0], torch.from_numpy(gray16.astype(np.float32)) / 65535)
    assert load_image(tmp_path / "gray.png").shape == (1, 8, 8)


def test_folder_is_recursive_sorted_with_relative_ids_and_skips_non_images(tmp_path):
    (tmp_path / "b").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "b" / "x.png")
    Image.new("RGB", (6, 4)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    data = TargetData(images=str(tmp_path), batch_size=3)
    with pytest.warns(UserWarning, match="skipped 2 file") as record:
        data.setup()
    assert "notes.txt" in str(record[0].message) and "broken.png" in str(record[0].message)
    batch = next(iter(data.predict_dataloader()))
    assert batch["id"] == ["a", "b/x"]
    assert [tuple(i.shape) for i in batch["image"]] == [(3, 4, 6), (1, 4, 4)]
    assert batch["feature"] == [None, None]


def test_empty_or_missing_folder_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.images: no readable image"):
        TargetData(images=str(tmp_path)).setup()
    with pytest.raises(ConfigError, match="data.images"):
        TargetData(images=str(tmp_path / "missing")).setup()
    with pytest.raises(ConfigError, match="data.images"):
        TargetData()


def test_feature_files(tmp_path):
    torch.save(torch.arange(6.0).view(2, 3), tmp_path / "many.pt")
    np.save(tmp_path / "one.npy", np.ones(3, np.float32))
    data = TargetData(features=str(tmp_path), batch_size=8)
    data.setup()
    batch = next(iter(data.predict_dataloader()))
    assert batch["id"] == ["many/00000", "many/00001", "one"]
    assert torch.equal(batch["feature"][1], torch.tensor([3.0, 4.0, 5.0]))
    assert batch["image"] == [None, None, None]


def test_non_finite_feature_names_the_file(tmp_path):
    torch.save(torch.tensor([[1.0, float("nan")], [1.0, 2.0]]), tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"^data.features: .*bad.pt': target features contain NaN or Inf \(rows \[0\]\)"):
        TargetData(features=str(tmp_path / "bad.pt")).setup()


def test_limit_and_duplicate_ids(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.new("L", (4, 4)).save(tmp_path / name)
    data = TargetData(images=str(tmp_path), limit=2)
    data.setup()
    assert [item["id"] for item in data.items] == ["a", "b"]
    np.save(tmp_path / "a.npy", np.ones(3, np.float32))
    with pytest.raises(ConfigError, match="^data: sample ids must be unique"):
        TargetData(images=str(tmp_path), features=str(tmp_path / "a.npy")).setup()


def test_limit_over_several_sources_says_what_it_left_out(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (4, 4)).save(tmp_path / "images" / name)
    np.save(tmp_path / "f.npy", np.ones((2, 3), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TargetData(images=str(tmp_path / "images"), limit=1).setup()  # one source: its first targets, nothing said
    with pytest.warns(UserWarning, match=r"^data.limit: the first 2 of 5 targets are used \(in the order images, "
                                         r"features, prompts\); left out: 2 features, 1 prompts$"):
        data = TargetData(images=str(tmp_path / "images"), features=str(tmp_path / "f.npy"), prompts=["x"], limit=2)
        data.setup()
    assert [item["id"] for item in data.items] == ["a", "b"]
