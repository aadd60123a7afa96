"""``lit-featinv report``: the self-contained page, the contact sheet, what varies (against hand-computed values), a
line for each bad input (and the report still written), and the page as a real browser renders it."""
import base64
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import ZOO, headless_chromium
from lit_featinv import analysis
from lit_featinv.analysis import report
from lit_featinv.runs import run_stats
from lit_featinv.app.console import main as cli_main
from lit_featinv.runs.images import load_image
from lit_featinv.method.records import TRAJECTORY_FORMAT

SIZE = 28


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def config(scale: float = 0.5, samples: int = 2) -> dict:
    """The model part of a run config, as predict writes it."""
    def part(cls, **args):
        return {"class_path": f"lit_featinv.{cls}", "init_args": args}
    return {"model": {"class_path": "lit_featinv.FeatureInversion", "init_args": {
        "prior": part("DiffusionPrior", pretrained="assets/zoo/fmnist-ddpm"),
        "extractor": part("TimmExtractor", model_name="local-dir:assets/zoo/fmnist-resnet10t", layer=None),
        "loss": {"class_path": "lit_featinv.SquaredL2"}, "guidance": part("UNetGradient", scale=scale),
        "num_inference_steps": 10, "recurrence": 2, "samples_per_target": samples, "seed": 0}}}


def make_run(folder: Path, ids=("a", "b"), samples: int = 2, size: int = SIZE, seed: int = 0,
             feature_target: bool = False, colour: bool = True) -> Path:
    """A run folder as predict writes it: noise images, metrics, config and trajectories."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if colour else (size, size)
    metrics, trajectories = [], []
    for target in ids:
        target_file = folder.parent / "targets" / f"{target}.png"
        if not target_file.exists():
            png(target_file, rng.integers(0, 256, shape, dtype=np.uint8))
        for j in range(samples):
            png(folder / "images" / f"{target}_{j}.png", rng.integers(0, 256, shape, dtype=np.uint8))
            cosine = float(rng.uniform(0.9, 1.0))
            line = {"id": target, "sample": j, "seed": j, "status": "ok", "image": f"images/{target}_{j}.png",
                    "best_image": f"best/{target}_{j}.png", "target_source": f"feats.pt[{target}]"
                    if feature_target else str(target_file), "cosine": cosine, "sq_l2": 1.0,
                    "rel_l2": 1 - cosine, "best_cosine": cosine, "best_step": 7, "nfe": 20, "seconds": 0.5}
            if not feature_target:
                line["target_image"] = str(target_file.resolve())
            metrics.append(line)
            steps = [s for s in range(10) for _ in range(2)] + [10]
            curve = np.sort(rng.uniform(0.2, cosine, len(steps)))
            trajectories.append({"format": TRAJECTORY_FORMAT, "id": target, "sample": j, "step": steps,
                                 "k": [i % 2 for i in range(len(steps))], "loss": (1 - curve).tolist(),
                                 "cosine": curve.tolist()})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trajectories))
    (folder / "config.yaml").write_text(yaml.safe_dump(config(samples=samples)))
    return folder


def run_report(capsys, *args) -> tuple[str, str]:
    """Run ``lit-featinv report ARGS`` through the console entry; (stdout, stderr)."""
    cli_main(["report", *map(str, args)])
    captured = capsys.readouterr()
    return captured.out, captured.err


def data_images(text: str) -> list[Image.Image]:
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    return [Image.open(io.BytesIO(base64.b64decode(uri))) for uri in uris]


@pytest.fixture
def two_runs(tmp_path) -> tuple[Path, Path, Path]:
    return (make_run(tmp_path / "run_a", seed=1), make_run(tmp_path / "run_b", samples=1, seed=2),
            make_run(tmp_path / "unguided", seed=3))


# ---- what varies, by hand --------------------------------------------------------------------------------------------
def test_diversity_and_std_map_against_hand_values():
    base = torch.rand(1, 4, 5) / 2
    pair = torch.stack([base, base + 0.25])  # differ by 0.25 everywhere
    assert analysis.pixel_diversity(pair) == pytest.approx(0.25, abs=1e-7)
    assert torch.allclose(analysis.std_map(pair), torch.full((4, 5), 0.125))
    triple = torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 0.5), torch.ones(3, 2, 2)])
    assert analysis.pixel_diversity(triple) == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert torch.allclose(analysis.std_map(triple), torch.full((2, 2), math.sqrt(1 / 6)))
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert analysis.feature_diversity(features) == pytest.approx((1 + 2 * (1 - 1 / math.sqrt(2))) / 3)
    assert analysis.variation([base], {}) is None  # one generation: nothing varies


def test_region_ratios_on_hand_made_std_maps():
    reference = torch.full((8, 8), 0.1)
    std = torch.full((8, 8), 0.05)
    std[:, 4:] = 0.2  # varies twice the reference's on the right, half on the left
    ratios = analysis.region_ratios(std, reference)
    assert ratios["right half"] == pytest.approx(2) and ratios["left half"] == pytest.approx(0.5)
    assert ratios["top half"] == ratios["centre"] == ratios["whole image"] == pytest.approx(1.25)
    (most, high), (least, low) = analysis.extremes(ratios)
    assert (most, least) == ("right half", "left half") and (high, low) == pytest.approx((2, 0.5))
    assert analysis.against_reference(std, reference) == ("varies 2.0x the reference in the right half, 0.5x in the "
                                                          "left half; 1.2x overall")
    assert analysis.against_reference(std, torch.full((5, 7), 0.1)).startswith("varies 2.0x the reference in the "
                                                                                "right half")  # sizes may differ
    assert analysis.against_reference(reference, reference) == ("varies about as much as the reference (within "
                                                                "0.8x-1.25x) everywhere; 1.0x overall")
    assert analysis.against_reference(3 * reference, reference) == "varies 3.0x the reference everywhere"
    fixed = reference.clone()
    fixed[:, :4] = 0  # a reference that does not vary on the left (a feature that sees the left half exactly)
    assert analysis.against_reference(std, fixed) == ("varies in the left half, where the reference does not (mean "
                                                      "std 0.050), 2.0x in the right half; 2.5x overall")


def test_extractor_diversity_in_the_page(tmp_path, capsys):
    (tmp_path / "vit.yaml").write_text(yaml.safe_dump({"class_path": "lit_featinv.TimmExtractor", "init_args": {
        "model_name": f"local-dir:{ZOO / 'fmnist-vit-tiny'}"}}))
    name, extractor = analysis.load_extractor(str(tmp_path / "vit.yaml"))
    assert name == "fmnist-vit-tiny"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"extractor": yaml.safe_load(
        (tmp_path / "vit.yaml").read_text())}}}))  # a run's config: its extractor
    assert analysis.load_extractor(str(tmp_path / "config.yaml"))[0] == name
    run = make_run(tmp_path / "run", ids=("a",), samples=3, colour=False)
    images = torch.stack([load_image(str(run / "images" / f"a_{j}.png")) for j in range(3)])
    features = extractor.measure(images)
    hand = sum(1 - torch.cosine_similarity(features[i], features[j], dim=0).item()
               for i, j in ((0, 1), (0, 2), (1, 2))) / 3
    measured = analysis.variation(list(images), {name: extractor})
    assert measured[name] == pytest.approx(hand, rel=1e-5)
    run_report(capsys, run, "--extractor", tmp_path / "vit.yaml", "--out", tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert f"diversity: {name}" in text and f"{name} {hand:.4f}" in text


def test_a_bad_extractor_config_is_one_line(tmp_path, two_runs):
    (tmp_path / "bad.yaml").write_text("class_path: lit_featinv.TimmExtractor\ninit_args: {bogus: 1}\n")
    with pytest.raises(SystemExit, match=r"^lit-featinv report: error: report.extractor: .*bogus[^\n]*$"):
        cli_main(["report", str(two_runs[0]), "--extractor", str(tmp_path / "bad.yaml")])


# ---- the page and the sheet ------------------------------------------------------------------------------------------
def test_the_page_is_self_contained_and_shows_every_run(tmp_path, two_runs, capsys):
    run_a, run_b, unguided = two_runs
    out, err = run_report(capsys, run_a, run_b, "--baseline", unguided, "--label", "guided A", "guided B",
                          "--out", tmp_path / "r.html", "--sheet", tmp_path / "sheet.png")
    assert f"wrote {tmp_path / 'r.html'}" in out and f"wrote {tmp_path / 'sheet.png'}" in out
    assert err == ""
    text = (tmp_path / "r.html").read_text()
    for needle in ("guided A", "guided B", "baseline", ">a<", ">b<", "UNetGradient scale=0.5", "10 steps x 2"):
        assert needle in text
    assert not re.search(r"https?://|file://", text)
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in text and "<link" not in text
    images = data_images(text)
    assert len(images) == len(sources)
    # per target: target + 2 + std map (A), 1 (B), 2 + std map (baseline), the strip's maps of A and the baseline;
    # histogram; 3 trajectory plots
    assert len(images) == 2 * (1 + 3 + 1 + 3 + 2) + 1 + 3
    assert {img.height for img in images[:4]} == {report.TILE}
    assert text.count("<svg") == 2 * 3  # a cosine curve per run and target
    # contact sheet: target | A (2 slots) | B (1 slot) | baseline (2 slots), tiles 112 px, header 20 px
    tile, pad, gap = report.TILE, report.PAD, report.GAP
    width = tile + (gap + 2 * tile + pad) + (gap + tile) + (gap + 2 * tile + pad)
    assert Image.open(tmp_path / "sheet.png").size == (width, report.HEADER + 2 * tile + pad)


def strip_alts(text: str) -> list[str]:
    """The alt texts of the what-varies strips' images, in page order."""
    rows = re.findall(r'<tr class="strip">.*?</tr>', text)
    return [alt for row in rows for alt in re.findall(r'alt="std map of ([^"]*)"', row)]


def test_the_strip_of_what_varies(tmp_path, two_runs, capsys):
    reference = tmp_path / "reference"
    shutil.copytree(two_runs[0], reference)  # the same images as run_a: it varies as much
    (reference / "config.yaml").unlink()  # a reference sample needs no config
    _, err = run_report(capsys, *two_runs[:2], "--baseline", two_runs[2], "--reference-run", reference,
                        "--out", tmp_path / "r.html")
    assert err == ""
    text = (tmp_path / "r.html").read_text()
    assert text.count('<tr class="strip">') == 2  # one per target
    assert strip_alts(text) == ["run_a", "the unguided prior (baseline)", "the reference"] * 2
    assert text.count("fewer than two images") == 2  # run_b: one generation per target
    assert "one scale for the strip: black 0" in text and "--baseline UNGUIDED_RUN_DIR" not in text
    assert text.count("<b>run_a</b> varies about as much as the reference (within 0.8x-1.25x) everywhere; "
                      "1.0x overall") == 2
    assert text.count("<b>the unguided prior (baseline)</b> varies ") == 2
    run_report(capsys, *two_runs[:2], "--out", tmp_path / "plain.html")  # no baseline: a hint, no reference lines
    plain = (tmp_path / "plain.html").read_text()
    assert strip_alts(plain) == ["run_a"] * 2 and "the reference" not in plain
    assert plain.count("The unguided prior's map needs <code>--baseline UNGUIDED_RUN_DIR</code>.") == 2


def test_feature_targets_get_a_labelled_placeholder(tmp_path, capsys):
    run = make_run(tmp_path / "run", feature_target=True)
    run_report(capsys, run, "--out", tmp_path / "r.html", "--sheet", tmp_path / "s.png")
    assert "feature target: feats.pt[a]" in (tmp_path / "r.html").read_text()


# ---- bad input: a line each, and the report of what can be shown ----------------------------------------------------
def check_written(tmp_path: Path, err: str, pattern: str) -> str:
    assert re.search(pattern, err), err
    assert all(line.startswith("lit-featinv report: ") for line in err.splitlines())
    text = (tmp_path / "r.html").read_text()
    assert re.search(pattern, text.replace("&#x27;", "'")), "the page shows the note too"
    return text


def test_runs_without_a_common_target(tmp_path, capsys):
    run_a, run_b = make_run(tmp_path / "a", ids=("x",)), make_run(tmp_path / "b", ids=("y",))
    _, err = run_report(capsys, run_a, run_b, "--out", tmp_path / "r.html")
    text = check_written(tmp_path, err, r"have no target in common; each run's own targets are shown")
    assert ">x<" in text and ">y<" in text and "not in this run" in text


def test_runs_of_different_image_sizes(tmp_path, capsys):
    run_a, run_b = make_run(tmp_path / "a"), make_run(tmp_path / "b", size=16)
    _, err = run_report(capsys, run_a, run_b, "--out", tmp_path / "r.html", "--sheet", tmp_path / "s.png")
    text = check_written(tmp_path, err, r"images differ in size \(a: 28x28, b: 16x16\); all are shown 112 px high")
    assert {img.height for img in data_images(text)[:7]} == {report.TILE}


def test_a_missing_metrics_file_leaves_that_run_out(tmp_path, two_runs, capsys):
    (two_runs[1] / "metrics.jsonl").unlink()
    _, err = run_report(capsys, *two_runs[:2], "--out", tmp_path / "r.html")
    text = check_written(tmp_path, err, re.escape(str(two_runs[1] / "metrics.jsonl")) + " does not exist")
    assert ">run_a<" in text and ">run_b<" not in text


def test_a_truncated_metrics_file(tmp_path, two_runs, capsys):
    metrics = two_runs[0] / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-40])
    _, err = run_report(capsys, two_runs[0], "--out", tmp_path / "r.html")
    check_written(tmp_path, err, re.escape(str(metrics)) + ": the last line is cut off")
    assert run_stats(list(analysis.load_run(two_runs[0], "a").generations.values()))["generations"] == 3


def test_a_trajectory_file_of_another_version(tmp_path, two_runs, capsys):
    file = two_runs[0] / "trajectories.jsonl"
    file.write_text(file.read_text().replace(TRAJECTORY_FORMAT, "lit_featinv.trajectory/9"))
    _, err = run_report(capsys, two_runs[0], two_runs[1], "--out", tmp_path / "r.html")
    text = check_written(tmp_path, err, re.escape(str(file)) + r": format 'lit_featinv.trajectory/9'.*left out")
    assert "run_a: no trajectories" in text and text.count("<svg") == 2  # run_b's curves only


def test_missing_image_files(tmp_path, two_runs, capsys):
    (two_runs[0] / "images" / "a_1.png").unlink()
    target = tmp_path / "targets" / "b.png"
    target.unlink()
    with open(two_runs[0] / "metrics.jsonl", "a") as f:  # and a generation that failed
        f.write(json.dumps({"id": "a", "sample": 2, "status": "nonfinite", "failed_step": 3}) + "\n")
    _, err = run_report(capsys, two_runs[0], "--out", tmp_path / "r.html", "--sheet", tmp_path / "s.png")
    text = check_written(tmp_path, err, re.escape(str(two_runs[0] / "images" / "a_1.png")) + " is missing")
    check_written(tmp_path, err, re.escape(f"{target} is missing (the target image of 'b')"))
    assert "missing: images/a_1.png" in text and f"missing: {target}" in text
    assert "NaN/Inf at step 3" in text and "4 (1 failed)" in text


def test_a_run_folder_that_does_not_exist(tmp_path, two_runs, capsys):
    _, err = run_report(capsys, tmp_path / "nowhere", two_runs[0], "--out", tmp_path / "r.html")
    check_written(tmp_path, err, r"report.runs: '.*nowhere' does not exist")
    with pytest.raises(SystemExit, match="no run folder could be read") as stop:
        cli_main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "none.html")])
    assert stop.value.code != 0 and not (tmp_path / "none.html").exists()
    assert "nowhere' does not exist" in capsys.readouterr().err


def test_a_reference_run_that_does_not_exist(tmp_path, two_runs, capsys):
    _, err = run_report(capsys, two_runs[0], "--reference-run", tmp_path / "nowhere", "--out", tmp_path / "r.html")
    text = check_written(tmp_path, err, r"report.reference_run: '.*nowhere' does not exist or is not a folder; run "
                                        r"'reference' is left out")
    assert len(err.splitlines()) == 1 and strip_alts(text) == ["run_a"] * 2  # and the report of the runs


def test_a_reference_run_without_a_target(tmp_path, two_runs, capsys):
    reference = make_run(tmp_path / "reference", ids=("a",), samples=3, seed=4)
    _, err = run_report(capsys, two_runs[0], "--reference-run", reference, "--out", tmp_path / "r.html")
    text = check_written(tmp_path, err, r"the reference run '.*reference' has no images of 1 target\(s\) shown \(b\): "
                                        r"they get no reference map")
    assert strip_alts(text) == ["run_a", "the reference", "run_a"]  # b: a placeholder instead
    assert "no reference map (see the notes)" in text and text.count("<b>run_a</b> varies ") == 1


def test_one_label_per_run(tmp_path, two_runs):
    with pytest.raises(SystemExit, match="report.label: 1 label"):
        cli_main(["report", str(two_runs[0]), str(two_runs[1]), "--label", "only", "--out", str(tmp_path / "r.html")])


# ---- in a real browser -----------------------------------------------------------------------------------------------
def chromium(page: Path, screenshot: Path) -> str:
    """Render ``page`` in headless Chromium; its log (console messages are ``CONSOLE`` lines)."""
    done = headless_chromium(page, "--enable-logging=stderr", "--v=0", f"--screenshot={screenshot}")
    assert screenshot.exists(), done.stderr[-2000:]
    return done.stderr


def console_messages(log: str) -> list[str]:
    return re.findall(r":CONSOLE[:(]\d*\)?\] (.*)", log)


def test_the_page_in_a_browser(tmp_path, two_runs, capsys):
    probe = tmp_path / "probe.html"  # the detector sees a console error
    probe.write_text('<!DOCTYPE html><html><body><script>console.error("deliberate x")</script></body></html>')
    assert any("deliberate x" in m for m in console_messages(chromium(probe, tmp_path / "probe.png")))
    run_report(capsys, *two_runs[:2], "--baseline", two_runs[2], "--out", tmp_path / "r.html")
    log = chromium(tmp_path / "r.html", tmp_path / "shot.png")
    assert console_messages(log) == []
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    assert (shot < 250).any(axis=2).mean() > 0.05  # not a blank page
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 500  # images, not just text
