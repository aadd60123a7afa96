"""Targets built from features in the config (``data.constructed``): each construction's exact vector against one
computed here independently, their ids, every bad input as one line naming its key, and a CLI run."""
import json
import math
import pickle

import numpy as np
import pytest
import torch
import yaml

from conftest import FMNIST, build_module, cli_config, targets_of, write_images
from lit_featinv import Arithmetic, Direction, FolderMean, Interpolation, TimmExtractor
from lit_featinv.app.cli import main
from lit_featinv.runs.data import TargetData
from lit_featinv.errors import ConfigError
from lit_featinv.runs.images import load_image

BOOT, PULLOVER, TROUSER, SNEAKER = (str(FMNIST / f"{n}.png") for n in
                                    ("00000_ankle-boot", "00001_pullover", "00002_trouser", "00009_sneaker"))


def slerp_reference(a, b, t):
    """Textbook slerp of the directions (angle from arccos) with the norm interpolated linearly, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    omega = np.arccos(np.clip(a @ b / (na * nb), -1, 1))
    direction = (np.sin((1 - t) * omega) * a / na + np.sin(t * omega) * b / nb) / np.sin(omega)
    return ((1 - t) * na + t * nb) * direction


def batch(constructed, **data):
    """All targets of a TargetData in one batch, through its DataLoader."""
    module = TargetData(constructed=constructed, batch_size=64, **data)
    module.setup()
    return next(iter(module.predict_dataloader()))


@pytest.fixture(scope="module")
def module(pixel_prior, timm_dir):
    m = build_module(pixel_prior, timm_dir)
    m.on_predict_start()  # the feature size
    return m


def measure(module, *paths):
    """The extractor's features of images, each alone: what an image target gets."""
    with torch.no_grad():
        return torch.stack([module.extractor.measure(load_image(p)[None])[0] for p in paths])


def test_interpolation_ids_ends_and_points(tmp_path):
    a, b = torch.tensor([3.0, 0.0, 1.0]), torch.tensor([0.0, -2.0, 5.0])
    torch.save(a, tmp_path / "a.pt")
    np.save(tmp_path / "b.npy", torch.stack([b, -b]).numpy())
    lerp = Interpolation(str(tmp_path / "a.pt"), f"{tmp_path / 'b.npy'}[0]", points=5)
    out = batch([lerp, Interpolation(str(tmp_path / "a.pt"), f"{tmp_path / 'b.npy'}[0]", points=5, spherical=True),
                 Interpolation(str(tmp_path / "a.pt"), f"{tmp_path / 'b.npy'}[0]", 3, True, name="my walk")])
    assert out["id"][:2] == ["lerp_a_to_b_row0_01of05", "lerp_a_to_b_row0_02of05"]
    assert out["id"][5] == "slerp_a_to_b_row0_01of05" and out["id"][-3:] == [f"my-walk_0{i}of03" for i in (1, 2, 3)]
    assert out["source"][2] == f"lerp({tmp_path / 'a.pt'}, {tmp_path / 'b.npy'}[0], t=0.5)"
    built = [c.build([p["feature"] for p in parts], i) for c, parts, i in zip(out["construction"], out["parts"],
                                                                              out["index"])]
    assert torch.equal(built[0], a) and torch.equal(built[4], b) and torch.equal(built[5], a) and torch.equal(built[9], b)
    for i, t in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
        assert torch.allclose(built[i], a + t * (b - a), atol=1e-6)
        assert np.allclose(built[5 + i].numpy(), slerp_reference(a, b, t) if 0 < t < 1 else (a, b)[int(t)], atol=1e-6)
    assert math.isclose(built[7].norm().item(), (a.norm().item() + b.norm().item()) / 2, rel_tol=1e-6)  # norm: linear


def test_slerp_of_parallel_antiparallel_and_zero_ends():
    a = torch.tensor([1.0, 2.0, 2.0])
    build = Interpolation("a.pt", "b.pt", points=3, spherical=True).build
    assert torch.allclose(build([a, 4 * a], 1), 2.5 * a)  # parallel: the common direction, the norm linear
    mid = build([a, -2 * a], 1)  # antiparallel: a quarter turn to a fixed perpendicular, norm (3 + 6) / 2
    assert abs(mid @ a) < 1e-5 and math.isclose(mid.norm().item(), 4.5, rel_tol=1e-6)
    assert torch.equal(build([a, -2 * a], 2), -2 * a)
    assert torch.allclose(build([torch.zeros(3), a], 1), a / 2)  # a zero end: linear
    quarter = Interpolation("a.pt", "b.pt", points=5, spherical=True).build([a, -2 * a], 1)
    assert math.isclose(torch.nn.functional.cosine_similarity(quarter, a, dim=0).item(), math.cos(math.pi / 4),
                        rel_tol=1e-6)


def test_arithmetic_of_images_and_feature_files(tmp_path, module):
    fa, fb, fc = measure(module, BOOT, PULLOVER, TROUSER)
    torch.save(torch.stack([torch.zeros_like(fc), fc]), tmp_path / "c.pt")
    out = batch([Arithmetic("A - B + C", {"A": BOOT, "B": PULLOVER, "C": TROUSER}),
                 Arithmetic("0.5*A + 0.25 * B - 2*C + A", {"A": BOOT, "B": PULLOVER, "C": f"{tmp_path / 'c.pt'}[1]"}),
                 Arithmetic("-A", {"A": BOOT}, name="minus boot")])
    assert out["id"] == ["arith_00000_ankle-boot-00001_pullover+00002_trouser",
                         "arith_0.5x00000_ankle-boot+0.25x00001_pullover-2xc_row1+00000_ankle-boot", "minus-boot"]
    assert out["source"][0] == f"A - B + C with A={BOOT}, B={PULLOVER}, C={TROUSER}"
    targets = targets_of(module, out)
    assert torch.allclose(targets[0], fa - fb + fc, atol=1e-5)
    assert torch.allclose(targets[1], 1.5 * fa + 0.25 * fb - 2 * fc, atol=1e-5)
    assert torch.allclose(targets[2], -fa, atol=1e-6)
    assert [len(p) for p in out["parts"]] == [3, 3, 1]  # A used twice is one part
    assert pickle.loads(pickle.dumps(out))["id"] == out["id"]  # DataLoader workers get batches pickled


def test_folder_mean_of_every_image_as_a_folder_of_targets_reads_them(tmp_path, module):
    folder = tmp_path / "class 3"
    write_images(folder, count=3, size=16)
    write_images(folder / "more", count=2, size=20)  # another size, in a subfolder
    (folder / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="notes.txt"):
        out = batch([FolderMean(str(folder))])
    assert out["id"] == ["mean_class-3"] and out["source"] == [f"mean of the images in {folder}"]
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    assert [p["source"] for p in out["parts"][0]] == paths
    target = targets_of(module, out)[0]
    assert torch.allclose(target, measure(module, *paths).mean(0), atol=1e-5)


def test_direction_row_and_norm_need_no_image(tmp_path, module):
    probe = torch.randn(4, module.feature_dim)
    torch.save(probe, tmp_path / "probe.pt")
    np.save(tmp_path / "w.npy", probe[2].numpy())
    out = batch([Direction(str(tmp_path / "probe.pt"), row=3, norm=10.0),
                 Direction(str(tmp_path / "w.npy")), Direction(str(tmp_path / "w.npy"), norm=0.5, name="w half")])
    assert out["id"] == ["direction_probe_row3_norm10", "direction_w", "w-half"]
    assert out["source"][0] == f"{tmp_path / 'probe.pt'}[3] scaled to norm 10"
    targets = targets_of(module, out)
    assert torch.allclose(targets[0], probe[3] * 10 / probe[3].norm(), atol=1e-5)
    assert math.isclose(targets[0].norm().item(), 10.0, rel_tol=1e-6)
    assert torch.equal(targets[1], probe[2])
    assert torch.allclose(targets[2], probe[2] / probe[2].norm() / 2, atol=1e-6)


def test_constructed_targets_join_the_others_with_unique_ids(tmp_path):
    write_images(tmp_path / "img")
    out = batch([Interpolation(BOOT, SNEAKER, 2)], images=str(tmp_path / "img"))
    assert out["id"] == ["img0", "img1", "img2", "lerp_00000_ankle-boot_to_00009_sneaker_01of02",
                         "lerp_00000_ankle-boot_to_00009_sneaker_02of02"]
    assert out["construction"][:3] == [None] * 3 and out["image"][3] is None
    with pytest.raises(ConfigError, match=r"data: sample ids must be unique, .* \(give constructions a name\)"):
        TargetData(constructed=[Interpolation(BOOT, SNEAKER, 2), Interpolation(BOOT, SNEAKER, 2)]).setup()


def bad(tmp_path):
    """(constructed config, key, message) for every bad input found before any model loads."""
    torch.save(torch.ones(5), tmp_path / "five.pt")
    torch.save(torch.ones(3), tmp_path / "three.pt")
    torch.save(torch.ones(4, 5), tmp_path / "probe.pt")
    (tmp_path / "empty").mkdir()
    five, three, probe = (str(tmp_path / n) for n in ("five.pt", "three.pt", "probe.pt"))
    return [
        (Arithmetic("A - B + D", {"A": five, "B": five}), "data.constructed[0].terms.D",
         "the expression 'A - B + D' names 'D', but terms gives only ['A', 'B']"),
        (Arithmetic("A - B", {"A": five, "B": str(tmp_path / "nope.png")}), "data.constructed[0].terms.B",
         "no such file or folder"),
        (Arithmetic("A + B", {"A": five, "B": three}), "data.constructed[0].terms.B",
         f"{three} has 3 values, but {five} has 5"),
        (Arithmetic("A + B", {"A": five, "B": five, "C": five}), "data.constructed[0].terms.C",
         "not used in the expression 'A + B'"),
        (Arithmetic("A + * B", {"A": five, "B": five}), "data.constructed[0].expression",
         "cannot parse 'A + * B': expected a term name but found '*'"),
        (Arithmetic("A + B; import os", {"A": five, "B": five}), "data.constructed[0].expression",
         "cannot parse 'A + B; import os': unexpected ';' at character 6"),
        (Arithmetic("A", {"A": probe}), "data.constructed[0].terms.A", "holds 4 vectors [N, D]: choose one"),
        (Interpolation(five, five, points=1), "data.constructed[0].points", "1 points cannot go from start to end"),
        (Interpolation(five, f"{five}[2]", points=2), "data.constructed[0].end",
         f"row 2 is out of range: {five!r} holds one vector [D]"),
        (Direction(probe, row=4), "data.constructed[0].row", f"row 4 is out of range: {probe!r} holds 4 rows (0..3)"),
        (Direction(probe, row=1, norm=0.0), "data.constructed[0].norm", "0.0 is not a norm (> 0"),
        (Direction(probe, row=1, norm=-2.0), "data.constructed[0].norm", "-2.0 is not a norm (> 0"),
        (Direction(BOOT), "data.constructed[0].vector", "is not a feature file (.pt/.pth/.npy)"),
        (FolderMean(str(tmp_path / "empty")), "data.constructed[0].folder", "no readable image in"),
        (FolderMean(five), "data.constructed[0].folder", "is not a folder"),
    ]


@pytest.mark.parametrize("case", range(15))
def test_bad_input_is_one_line_naming_the_key(tmp_path, case):
    cases = bad(tmp_path)
    assert len(cases) == 15
    construction, key, message = cases[case]
    config = {"class_path": f"lit_featinv.{type(construction).__name__}",
              "init_args": {k: v for k, v in vars(construction).items() if k != "key"}}
    with pytest.raises(ConfigError) as err:  # as the CLI checks its config before any model loads
        TargetData.check_sources(constructed=[config])
    assert err.value.key == key and message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):  # and in Python
        TargetData(constructed=[construction]).setup()


def test_feature_file_of_another_size_than_the_extractor_or_zero_direction_stop_the_batch(tmp_path, module):
    torch.save(torch.ones(5), tmp_path / "five.pt")
    torch.save(torch.zeros(module.feature_dim), tmp_path / "zero.pt")
    out = batch([Arithmetic("A - B", {"A": BOOT, "B": str(tmp_path / "five.pt")})])
    with pytest.raises(ConfigError, match=rf"^data.constructed\[0\].terms.B: {tmp_path / 'five.pt'}: feature has 5 "
                                          rf"values, but the extractor \(model.extractor\) gives {module.feature_dim}$"):
        targets_of(module, out)
    out = batch([Direction(str(tmp_path / "zero.pt"), norm=3.0)])
    with pytest.raises(ConfigError, match=r"data.constructed\[0\].vector: .*zero.pt scaled to norm 3: the vector is "
                                          r"zero"):
        targets_of(module, out)


def test_bad_construction_stops_the_cli_before_any_model_loads(tmp_path, pixel_prior, timm_dir, monkeypatch):
    import lit_featinv.models.priors

    def no_model_work(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")
    monkeypatch.setattr(lit_featinv.models.priors.AutoModel, "from_pretrained", no_model_work)
    config = cli_config(pixel_prior, timm_dir, tmp_path)
    config["data"]["init_args"] = {"constructed": [
        {"class_path": "lit_featinv.Interpolation", "init_args": {"start": BOOT, "end": SNEAKER, "points": 3}},
        {"class_path": "lit_featinv.Arithmetic", "init_args": {"expression": "A - B", "terms": {"A": BOOT}}}]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "out")])
    assert str(stop.value) == ("lit-featinv: error: data.constructed[1].terms.B: the expression 'A - B' names 'B', "
                               "but terms gives only ['A']")


def test_cli_run_matches_the_constructed_vectors(tmp_path, pixel_prior, timm_dir):
    ext = TimmExtractor(f"local-dir:{timm_dir}")
    with torch.no_grad():
        boot, pullover, sneaker = (ext(load_image(p)[None])[0] for p in (BOOT, PULLOVER, SNEAKER))
    probe = torch.randn(3, boot.numel(), generator=torch.Generator().manual_seed(0))
    torch.save(probe, tmp_path / "probe.pt")
    config = cli_config(pixel_prior, timm_dir, tmp_path, batch_size=3)
    config["data"]["init_args"] = {"num_workers": 1, "batch_size": 3, "constructed": [
        {"class_path": "lit_featinv.Interpolation",
         "init_args": {"start": BOOT, "end": SNEAKER, "points": 3, "spherical": True}},
        {"class_path": "lit_featinv.Arithmetic",
         "init_args": {"expression": "2*A - B", "terms": {"A": SNEAKER, "B": PULLOVER}, "name": "twice"}},
        {"class_path": "lit_featinv.Direction", "init_args": {"vector": str(tmp_path / "probe.pt"), "row": 1,
                                                             "norm": 5.0}}]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "out")])
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    expected = {"slerp_00000_ankle-boot_to_00009_sneaker_01of03": boot,
                "slerp_00000_ankle-boot_to_00009_sneaker_02of03": torch.from_numpy(slerp_reference(boot, sneaker, 0.5)),
                "slerp_00000_ankle-boot_to_00009_sneaker_03of03": sneaker,
                "twice": 2 * sneaker - pullover, "direction_probe_row1_norm5": probe[1] * 5 / probe[1].norm()}
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted((i, j) for i in expected for j in range(2))
    for r in rows:
        assert r["status"] == "ok" and "target_image" not in r
        with torch.no_grad():
            f = ext(load_image(tmp_path / "out" / r["image"])[None])[0].double()
        target = expected[r["id"]].double()
        assert abs(torch.nn.functional.cosine_similarity(f, target, dim=0).item() - r["cosine"]) < 1e-5
        assert abs((f - target).pow(2).sum().item() - r["sq_l2"]) < 1e-4 * max(1.0, r["sq_l2"])
    assert {r["target_source"] for r in rows if r["id"] == "twice"} == {f"2*A - B with A={SNEAKER}, B={PULLOVER}"}
