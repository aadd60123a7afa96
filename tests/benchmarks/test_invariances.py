"""benchmarks/invariances.py and benchmarks/invariant_features.py (issue 21, item 1): each feature with a known
invariance has it, loads as a ``ModuleExtractor`` module by ``class_path``, and the benchmark runs end to end."""
import sys

import pytest
import torch

from conftest import FMNIST, ROOT, ZOO

sys.path.insert(0, str(ROOT / "benchmarks"))
import invariant_features as inv  # noqa: E402


@pytest.fixture(scope="module")
def items():
    """The first 4 shipped Fashion-MNIST test items, [4, 1, 32, 32] in [0, 1]."""
    from lit_featinv.runs import load_image
    return torch.stack([load_image(p) for p in sorted(FMNIST.glob("*.png"))[:4]])


@pytest.fixture(scope="module")
def nets():
    return {name: inv.load(name) for name in inv.FEATURES}


def changed(a, b):
    """Relative change of features b against a."""
    return float((a - b).norm() / a.norm())


def test_the_control_is_the_zoo_classifier(items, nets):
    from lit_featinv import TimmExtractor
    zoo = TimmExtractor(f"local-dir:{ZOO / 'fmnist-resnet10t'}")
    torch.testing.assert_close(nets["control"](items), zoo.measure(items), atol=1e-5, rtol=1e-5)
    assert nets["control"].logits(items).argmax(1).tolist() == zoo.network(zoo.preprocess(items)).argmax(1).tolist()


def test_every_feature_loads_by_class_path_through_module_extractor(items, nets):
    from lit_featinv import ModuleExtractor
    from lit_featinv.config import instantiate
    from lit_featinv.models.extractors import FeatureExtractor
    for name, net in nets.items():
        ext = instantiate(inv.extractor_config(name), FeatureExtractor)
        assert isinstance(ext, ModuleExtractor) and type(ext.network) is inv.FEATURES[name]
        torch.testing.assert_close(ext.measure(items), net(items), atol=1e-5, rtol=1e-5)


def test_left_half_ignores_the_right_half_and_sees_the_left(items, nets):
    net, control = nets["left_half"], nets["control"]
    other = items.clone()
    other[..., 16:] = torch.rand_like(other[..., 16:])  # a new right half
    assert torch.equal(net(items), net(other))
    assert changed(control(items), control(other)) > 0.1  # the plain network does see it
    left = items.clone()
    left[..., :16] = torch.rand_like(left[..., :16])  # a new left half
    assert changed(net(items), net(left)) > 0.1
    blanked = items.clone()
    blanked[..., 16:] = 0  # right half set to background: what the network sees
    torch.testing.assert_close(net(items), control(blanked))


@pytest.mark.parametrize("a, b", [(0.5, 0.2), (1.7, -0.1), (3.0, 0.0)])
def test_contrast_normalised_ignores_brightness_and_contrast(items, nets, a, b):
    net, control = nets["contrast_normalised"], nets["control"]
    assert changed(net(items), net(a * items + b)) < 2e-3  # exact up to the eps added to the std
    assert changed(control(items), control(a * items + b)) > 0.05
    torch.testing.assert_close(net.see(items).mean((-2, -1)), torch.full((4, 1), inv.TYPICAL_MEAN))
    shape = items.clone()
    shape[..., 8:24, 8:24] = shape[..., 8:24, 8:24].flip(-1)  # the shape changes
    assert changed(net(items), net(shape)) > 0.05


def test_blurred_sees_the_blurred_image_and_hardly_fine_texture(items, nets):
    net, control = nets["blurred"], nets["control"]
    torch.testing.assert_close(net(items), control(inv.blur(items, 2.0)))
    assert abs(float(inv.blur(torch.ones(1, 1, 32, 32), 2.0)[0, 0, 16, 16]) - 1) < 1e-6  # normalised kernel
    texture = 0.15 * (-1) ** torch.arange(32).view(-1, 1).add(torch.arange(32))  # a 2 px checkerboard
    fine = items + texture
    assert changed(net(items), net(fine)) < 0.01 * changed(control(items), control(fine))
    on_item = items + texture * (items > 0.1)  # on the item only (the mask's edges are coarse)
    assert changed(net(items), net(on_item)) < 0.1 * changed(control(items), control(on_item))
    coarse = items.roll(6, -1)  # the coarse layout changes
    assert changed(net(items), net(coarse)) > 0.05


def test_class_posterior_is_the_softmax_of_the_classifiers_logits(items, nets):
    p = nets["class_posterior"](items)
    assert p.shape == (4, 10) and (p >= 0).all()
    torch.testing.assert_close(p.sum(1), torch.ones(4))
    torch.testing.assert_close(p, nets["control"].logits(items).softmax(1))
    assert p.argmax(1).tolist() == [9, 2, 1, 1]  # ankle boot, pullover, trouser, trouser


def test_the_benchmark_runs_and_writes_its_table_and_figure(tmp_path):
    import invariances
    out = tmp_path / "inv"
    assert invariances.main(["--out", str(out), "--targets", "1", "--generations", "2", "--steps", "2",
                             "--recurrence", "1"]) == 0
    text = (out / "invariances.md").read_text()
    for label in invariances.LABELS.values():
        assert f"| {label} |" in text
    rows = [line for line in text.splitlines() if line.count("|") == 11 and ("ignored" in line or "encoded" in line)]
    assert len(rows) == len(invariances.ROWS), text
    from PIL import Image
    with Image.open(out / "invariances.png") as fig:
        assert fig.width > 6 * 2 * 64 and fig.height >= 64
    saved = torch.load(out / "images" / "left_half.pt")
    assert saved["images"].shape == (1, 2, 1, 32, 32)
    # a rerun of the measures alone reuses the generations
    assert invariances.main(["--out", str(out), "--targets", "1", "--generations", "2", "--steps", "2",
                             "--recurrence", "1", "--features", "unguided"]) == 0


def test_a_stopped_run_resumes_at_its_next_batch_of_targets(tmp_path, capsys):
    """Each batch of targets is saved as it finishes: a rerun regenerates only what is missing, with the same seeds
    (the ids of one call), and writes no table until every run is saved."""
    import invariances
    args = ["--out", str(tmp_path), "--targets", "2", "--generations", "2", "--steps", "2", "--recurrence", "1",
            "--batch-targets", "1", "--features", "control"]
    assert invariances.main(args) == 0
    assert "not saved" in capsys.readouterr().out and not (tmp_path / "invariances.md").exists()
    whole = torch.load(tmp_path / "images" / "control.pt")
    (tmp_path / "images" / "control.pt").unlink()
    (tmp_path / "images" / "control" / "targets-0001-1.pt").unlink()
    assert invariances.main(args) == 0
    log = capsys.readouterr().out
    assert "targets 2-2 of 2" in log and "targets 1-1" not in log
    again = torch.load(tmp_path / "images" / "control.pt")
    assert torch.equal(again["images"], whole["images"]) and again["cosine"] == whole["cosine"]
