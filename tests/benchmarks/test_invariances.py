"""benchmarks/invariances.py and benchmarks/invariant_features.py (issue 21, item 1): each feature with a known
invariance has it, loads as a ``ModuleExtractor`` module by ``class_path``, and the benchmark runs end to end;
benchmarks/data_reference.py finds each target's nearest training images by a feature's distance (the data
reference), on tiny synthetic training sets."""
import json
import sys

import pytest
import torch

from conftest import FMNIST, ROOT, ZOO

sys.path.insert(0, str(ROOT / "benchmarks"))
import data_reference as data  # noqa: E402
import invariant_features as inv  # noqa: E402


@pytest.fixture(scope="module")
def items():
    """The first 4 shipped Fashion-MNIST test items, [4, 1, 32, 32] in [0, 1]."""
    from lit_featinv.runs import load_image
    return torch.stack([load_image(p) for p in sorted(FMNIST.glob("*.png"))[:4]])


def structured_train(items: torch.Tensor) -> torch.Tensor:
    """A few hundred 28 x 28 uint8 training images: the shipped items shifted, flipped and dimmed, the first item
    itself among them (index 0, identical in pixels to the first target)."""
    crops = data.to_uint8(items[:, 0, 2:30, 2:30]).float()
    out = [crops[i].roll(shift, -1).flip(-1) if flip else crops[i].roll(shift, -1)
           for i in range(len(crops)) for shift in (0, 1, -2) for flip in (False, True)]
    out = torch.stack(out)
    out = torch.cat([out, out * 0.7, out * 0.4]).round().to(torch.uint8)
    assert torch.equal(out[0], crops[0].to(torch.uint8))
    return out


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    """A tiny training set (idx, gzipped): 96 structured images, the first target among them."""
    from lit_featinv.runs import load_image
    items = torch.stack([load_image(p) for p in sorted(FMNIST.glob("*.png"))[:16]])
    path = tmp_path_factory.mktemp("train") / "train-images-idx3-ubyte.gz"
    data.write_idx(str(path), structured_train(items)[:96])
    return path


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


@pytest.fixture(scope="module")
def four_images(tmp_path_factory):
    """A folder of the first 4 shipped test images: the targets and the real reference of the prior score's p95."""
    import shutil
    folder = tmp_path_factory.mktemp("images")
    for path in sorted(FMNIST.glob("*.png"))[:4]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.slow  # 77 s of the suite on a slow day: pytest -m slow
def test_the_benchmark_runs_with_a_particle_sampler_and_writes_its_table_and_figure(tmp_path, train_file, four_images):
    """End to end, small: the guided runs take a particle sampler by --overrides, the unguided run the prior alone."""
    import invariances
    out = tmp_path / "inv"
    sampler = {"class_path": "lit_featinv.ParticleSampler", "init_args": {"particles": 4, "lam": 1.0}}
    args = ["--out", str(out), "--targets", "1", "--generations", "2", "--steps", "2", "--recurrence", "1",
            "--neighbours", "4", "--images", str(four_images), "--train", str(train_file),
            "--overrides", json.dumps({"sampler": sampler, "eta": 1.0})]
    assert invariances.main(args) == 0
    text = (out / "invariances.md").read_text()
    for label in invariances.LABELS.values():
        assert f"| {label} |" in text
    header = next(line for line in text.splitlines() if line.startswith("| feature | factor |"))
    assert "| unguided | data neighbours | goal | pass | generations / data | within [0.67, 1.5] of data |" in header
    rows = [line for line in text.splitlines() if line.count("|") == 14 and ("ignored" in line or "encoded" in line)]
    assert len(rows) == len(invariances.ROWS), text
    assert all(row.endswith(("| yes |", "| **no** |")) for row in rows)
    assert "| feature | passes (every row) | within the data's spread (every row) |" in text
    assert "| feature | data neighbours' cosine: mean | worst | generations' cosine: mean | worst |" in text
    assert "| feature | measure | invariant feature | control | unguided | data neighbours |" in text
    natural = [line for line in text.splitlines() if "| prior score median (lower is more typical; the real" in line]
    assert len(natural) == len(invariances.FEATURES) - 1 and "| class posterior |" in natural[-1], natural
    print(header, rows[0], sep="\n")
    # the particles: the sampler and its overrides in the table, the ESS of each guided run
    assert 'UNet gradient, sampler = `{"class_path": "lit_featinv.ParticleSampler"' in text and ', eta = `1.0`' in text
    line = next(line for line in text.splitlines() if line.startswith("Particles (model.sampler)"))
    assert all(invariances.LABELS[n] in line for n in invariances.FEATURES) and "unguided" not in line, line
    saved = torch.load(out / "images" / "control.pt")
    assert saved["particles"] == 4 and len(saved["ess"]) == 1 and 0.25 <= saved["ess"][0] <= 1
    assert saved["args"]["overrides"]["sampler"] == sampler
    assert torch.load(out / "images" / "unguided.pt")["ess"] == []  # no sampler: each generation on its own
    assert "overrides" not in invariances.run_args(invariances.parse([]))  # runs saved before the option still match
    from PIL import Image
    with Image.open(out / "invariances.png") as fig:
        assert fig.width > 6 * 2 * 64 and fig.height >= 64
    with Image.open(out / "invariances-data.png") as fig:  # per feature: target | 2 generations | 4 neighbours
        assert fig.width >= 7 * 64 and fig.height >= 5 * 64
    saved = torch.load(out / "images" / "left_half.pt")
    assert saved["images"].shape == (1, 2, 1, 32, 32)
    assert len(list((out / "data").glob("*.pt"))) == len(invariances.FEATURES)  # the training features, cached
    from lit_featinv.app.report import make_report  # the run folders: the data neighbours as a reference run
    runs = out / "runs"
    make_report([str(runs / "left_half" / "generations"), "--baseline", str(runs / "unguided"), "--reference-run",
                 str(runs / "left_half" / "data"), "--out", str(tmp_path / "report.html")])
    page = (tmp_path / "report.html").read_text()
    assert page.count('alt="std map of the reference"') == 1 and "the reference" in page
    # a rerun of the measures alone reuses the generations and the training features; beside the first run's results
    # file, the posterior goal's rows give both runs the same ratios and verdicts
    (tmp_path / "first.md").write_text(text)
    assert invariances.main(args + ["--features", "unguided", "--beside", str(tmp_path / "first.md")]) == 0
    lines = (out / "invariances.md").read_text().splitlines()
    goal = [line.split(" | ") for line in lines if line.count("|") == 9 and line.split(" | ")[2] in
            ("ignored", "encoded", "natural")]
    assert len(goal) == len(invariances.ROWS) + 2 and all(row[4:6] == [row[6], row[7].rstrip(" |")] for row in goal)
    verdict = next(line for line in lines if line.startswith("Every row: this run"))
    assert verdict.split(", beside ")[0].removeprefix("Every row: this run ") == verdict.split(", beside ")[1][:-1]


@pytest.mark.parametrize("overrides, message", [
    ("{sampler", "--overrides is not JSON"),
    ('{"recurrence": 2, "eta": 1}',
     r"--overrides must be a JSON object of model.init_args other than \['recurrence'\]"),
    ("[1]", "--overrides must be a JSON object of model.init_args other than"),
])
def test_bad_overrides_stop_with_one_line(overrides, message):
    import invariances
    with pytest.raises(SystemExit, match=message):
        invariances.parse(["--overrides", overrides])


def test_a_beside_file_without_measures_stops_with_one_line(tmp_path):
    import invariances
    (tmp_path / "notes.md").write_text("# not a results file\n")
    with pytest.raises(SystemExit, match=r"--beside .*notes.md has not the measures of a results file"):
        invariances.beside_lines({}, {}, str(tmp_path / "notes.md"), 0.15)


def test_a_missing_training_set_stops_with_one_line(tmp_path):
    import invariances
    with pytest.raises(SystemExit, match=r"--train .*nothing.gz not found: apt-get install dataset-fashion-mnist"):
        invariances.main(["--out", str(tmp_path), "--train", str(tmp_path / "nothing.gz")])


def test_a_stopped_run_resumes_at_its_next_batch_of_targets(tmp_path, capsys, train_file):
    """Each batch of targets is saved as it finishes: a rerun regenerates only what is missing, with the same seeds
    (the ids of one call), and writes no table until every run is saved."""
    import invariances
    args = ["--out", str(tmp_path), "--targets", "2", "--generations", "2", "--steps", "2", "--recurrence", "1",
            "--batch-targets", "1", "--features", "control", "--train", str(train_file)]
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


def test_the_idx_reader_reads_a_file_written_by_hand(tmp_path):
    import gzip
    import struct
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    raw = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 5, 28, 28) + images.numpy().tobytes()
    (tmp_path / "plain-idx3-ubyte").write_bytes(raw)
    with gzip.open(tmp_path / "images-idx3-ubyte.gz", "wb") as f:
        f.write(raw)
    for name in ("plain-idx3-ubyte", "images-idx3-ubyte.gz"):
        assert torch.equal(data.read_idx(str(tmp_path / name)), images)
    labels = torch.arange(10, dtype=torch.uint8)
    (tmp_path / "labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 0x08, 1, 10) + labels.numpy().tobytes())
    assert torch.equal(data.read_idx(str(tmp_path / "labels-idx1-ubyte")), labels)
    data.write_idx(str(tmp_path / "again.gz"), images)
    assert (tmp_path / "again.gz").read_bytes() and torch.equal(data.read_idx(str(tmp_path / "again.gz")), images)
    padded = data.load_train(str(tmp_path / "images-idx3-ubyte.gz"))  # 28 x 28 -> 32 x 32, 2 zeros each side
    assert padded.shape == (5, 1, 32, 32) and padded.dtype == torch.uint8
    assert torch.equal(padded[:, 0, 2:30, 2:30], images) and padded.sum() == images.sum()
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="header"):
        data.read_idx(str(tmp_path / "short"))


def brute_force(target: torch.Tensor, pool: torch.Tensor, train: torch.Tensor, target_u8: torch.Tensor, k: int):
    """The k nearest rows by a sort of every distance, one at a time, skipping images identical to the target."""
    found = sorted((float(torch.dist(pool[i], target)), i) for i in range(len(pool))
                   if not torch.equal(train[i], target_u8))
    return [i for _, i in found[:k]], [dist for dist, _ in found[:k]]


@pytest.mark.parametrize("feature", ["left_half", "blurred", "class_posterior"])
def test_the_neighbours_are_the_k_nearest_by_the_features_distance_target_excluded(items, feature):
    train = data.pad(structured_train(items))  # [288, 1, 32, 32], the first item at index 0
    ext = data.extractor(feature, 2.0)
    pool = data.features(ext, train, batch=100)
    torch.testing.assert_close(pool, ext.measure(train.float() / 255))
    k = 16
    near = data.neighbours(feature, items, train, pool, k, 2.0)
    assert near["images"].shape == (4, k, 1, 32, 32) and near["index"].shape == near["distance"].shape == (4, k)
    assert (near["distance"].diff(dim=1) >= 0).all()  # nearest first
    assert 0 not in near["index"][0].tolist()  # the first target's own pixels are excluded ...
    assert data.nearest(ext.measure(items[:1]), pool, 1)[0].tolist() == [[0]]  # ... though nearest without the rule
    for i in range(len(items)):
        index, dist = brute_force(ext.measure(items[i: i + 1])[0], pool, train, data.to_uint8(items[i]), k)
        assert near["index"][i].tolist() == index
        torch.testing.assert_close(near["distance"][i], torch.tensor(dist), rtol=1e-5, atol=1e-6)
    assert torch.equal(near["images"], train[near["index"]].float() / 255)
    expected = torch.nn.functional.cosine_similarity(pool[near["index"]], ext.measure(items)[:, None], dim=-1)
    torch.testing.assert_close(near["cosine"], expected)


def test_the_training_features_are_cached_by_feature_and_settings(tmp_path, train_file, capsys):
    train = data.load_train(str(train_file))
    first = data.train_features("blurred", 2.0, train, str(train_file), str(tmp_path))
    assert "features of 96 of 96" in capsys.readouterr().out
    again = data.train_features("blurred", 2.0, train, str(train_file), str(tmp_path))
    assert "reusing" in capsys.readouterr().out and torch.equal(first, again)
    other = data.train_features("blurred", 1.0, train, str(train_file), str(tmp_path))  # another sigma: its own file
    assert "features of 96" in capsys.readouterr().out and not torch.equal(first, other)
    assert len(list(tmp_path.glob("blurred-*.pt"))) == 2
