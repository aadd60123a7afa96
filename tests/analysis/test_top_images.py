"""``lit-featinv report --top-images``: beside latent targets, the folder's images with the highest activation of each
target's latent (against a direct computation with the run's extractor), the activations in the captions of the page
and of the contact sheet, and a line for each bad input."""
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from lit_featinv.analysis import build, contact_sheet, load_run
from lit_featinv.analysis.report import HEADER, PAD
from lit_featinv.analysis.top_images import CAPTION, add_top_images
from lit_featinv.app.console import main as cli_main
from lit_featinv.config import instantiate
from lit_featinv.models.extractors import FeatureExtractor
from lit_featinv.runs.images import load_image

LATENTS = [3, 10, 20]  # the SAE latents the run keeps, one per one-hot target


def part(cls: str, **args) -> dict:
    return {"class_path": f"lit_featinv.{cls}", "init_args": args}


def sae_extractor(folder: Path, timm_dir: Path) -> dict:
    """A random SAELens-layout SAE (32 latents) on the tiny timm ResNet's 96-d feature, keeping ``LATENTS``."""
    g = torch.Generator().manual_seed(0)
    weights = folder / "sae.safetensors"
    save_file({"W_enc": torch.randn(96, 32, generator=g) / 10, "b_enc": torch.zeros(32),
               "W_dec": torch.randn(32, 96, generator=g), "b_dec": torch.zeros(96)}, str(weights))
    base = part("TimmExtractor", model_name=f"local-dir:{timm_dir}", layer=None)
    return part("SAEExtractor", base=base, weights=str(weights), layout="saelens", activation="relu", latents=LATENTS,
                pre_activation=True)


def noise(path: Path, seed: int, size: int = 16) -> None:
    """A grey noise image of its own brightness and contrast (so activations spread)."""
    rng = np.random.default_rng(seed)
    level, spread = rng.uniform(20, 230), rng.uniform(5, 120)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.normal(level, spread, (size, size)).clip(0, 255).astype(np.uint8)).save(path)


def make_run(folder: Path, extractor: dict, loss: dict, samples: int = 2) -> Path:
    """A run folder as predict writes it for one-hot targets (a .npy of identity rows): its generations' loss is
    -activation, measured on the saved PNGs with the run's extractor."""
    onehot = folder.parent / "onehot.npy"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(onehot, np.eye(len(LATENTS), dtype=np.float32))
    net = instantiate(extractor, FeatureExtractor).eval()
    lines = []
    for i in range(len(LATENTS)):
        for j in range(samples):
            image = folder / "images" / f"onehot/{i:05d}_{j}.png"
            noise(image, 100 + 10 * i + j)
            activation = float(net.measure(load_image(str(image))[None])[0, i])
            lines.append({"id": f"onehot/{i:05d}", "sample": j, "seed": j, "status": "ok",
                          "image": f"images/onehot/{i:05d}_{j}.png", "target_source": f"{onehot}[{i}]",
                          "cosine": 0.1, "sq_l2": 1.0, "rel_l2": 1.0, "loss": -activation, "seconds": 0.1})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "model": part("FeatureInversion", extractor=extractor, loss=loss, samples_per_target=samples, seed=0),
        "data": part("TargetData", features=str(onehot))}))
    return folder


@pytest.fixture
def latent_run(tmp_path, timm_dir) -> tuple[Path, Path, dict]:
    """An SAE latent run and a folder of 24 real images (two subfolders)."""
    extractor = sae_extractor(tmp_path, timm_dir)
    run = make_run(tmp_path / "run", extractor, part("Activation", channel=None))
    for n in range(24):
        noise(tmp_path / "real" / ("a" if n % 2 else "b/c") / f"{n:03d}.png", n)
    return run, tmp_path / "real", extractor


def direct_top(extractor: dict, folder: Path, n: int) -> list[list[tuple[str, float]]]:
    """Per one-hot target i: the n (name, activation) with the largest feature entry i, computed image by image."""
    net = instantiate(extractor, FeatureExtractor).eval()
    files = sorted(folder.rglob("*.png"))
    values = torch.cat([net.measure(load_image(str(f))[None]) for f in files])
    return [[(files[k].relative_to(folder).as_posix(), float(values[k, i]))
             for k in values[:, i].argsort(descending=True)[:n]] for i in range(values.shape[1])]


def test_the_top_images_are_those_with_the_highest_activation(latent_run):
    run_dir, real, extractor = latent_run
    report = build([load_run(run_dir, "sae")], None, {})
    top = add_top_images(report, real, 3, batch=5)  # batches of 5: the order of files is kept across them
    expected = direct_top(extractor, real, 3)
    assert top.count == 24 and report.top is top
    for i, latent in enumerate(LATENTS):
        target = f"onehot/{i:05d}"
        assert top.labels[0][target] == f"latent {latent}"
        found = [(r.name, r.activation) for r in top.best[0, target]]
        assert [name for name, _ in found] == [name for name, _ in expected[i]]
        assert [a for _, a in found] == pytest.approx([a for _, a in expected[i]], rel=1e-4, abs=1e-5)
        assert all(a >= b for (_, a), (_, b) in itertools.pairwise(found))
        line = report.cells[0, target].lines[0]
        assert top.activation(0, line) == -line["loss"]
    sheet = contact_sheet(report)  # rows with a caption under each tile
    assert sheet.height == HEADER + 3 * (report.height + CAPTION + PAD) - PAD


def test_the_page_and_the_sheet_caption_activations(latent_run, tmp_path, capsys):
    run_dir, real, extractor = latent_run
    html_file, sheet_file = tmp_path / "r.html", tmp_path / "sheet.png"
    cli_main(["report", str(run_dir), "--top-images", str(real), "--out", str(html_file), "--sheet", str(sheet_file)])
    out, err = capsys.readouterr()
    assert "wrote" in out and "top_images" not in err
    text = html_file.read_text()
    expected = direct_top(extractor, real, 4)  # the default: 4 per target
    for i, latent in enumerate(LATENTS):
        assert f"onehot/{i:05d} latent {latent}" in text
        for name, activation in expected[i]:
            assert f"<b>act {activation:.3f}</b><br>{name}" in text
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        assert f"<b>act {-line['loss']:.3f}</b><br>cos" in text
    assert text.count('class="real"') == len(LATENTS) and "the 4 image(s) of the 24 in" in text
    sheet = Image.open(sheet_file)
    tiles = 1 + 2 + 4  # target, generations, real images
    assert sheet.width >= tiles * 112 and sheet.height == HEADER + 3 * (112 + CAPTION + PAD) - PAD


def test_a_channel_of_every_target(tmp_path, timm_dir):
    """Activation(channel=c): every target ranks the folder by channel c; ``select`` names the channel."""
    extractor = part("TimmExtractor", model_name=f"local-dir:{timm_dir}", layer=None, select=[7, 40, 90])
    run_dir = make_run(tmp_path / "run", extractor, part("Activation", channel=1), samples=1)
    for n in range(6):
        noise(tmp_path / "real" / f"{n}.png", n)
    report = build([load_run(run_dir, "c")], None, {})
    top = add_top_images(report, tmp_path / "real", 2)
    expected = direct_top(extractor, tmp_path / "real", 2)[1]
    for i in range(len(LATENTS)):
        assert top.labels[0][f"onehot/{i:05d}"] == "channel 40"
        assert [r.name for r in top.best[0, f"onehot/{i:05d}"]] == [name for name, _ in expected]


# ---- bad input, one line each --------------------------------------------------------------------------------------
def test_a_folder_without_images_is_one_line(latent_run, tmp_path):
    run_dir, _, _ = latent_run
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    for folder, message in ((tmp_path / "empty", "no PNG image in"), (tmp_path / "absent", "does not exist")):
        with pytest.raises(SystemExit, match=rf"^lit-featinv report: error: report.top_images: [^\n]*{message}[^\n]*$"):
            cli_main(["report", str(run_dir), "--top-images", str(folder), "--out", str(tmp_path / "r.html")])
    with pytest.raises(SystemExit, match=r"^lit-featinv report: error: report.top: 0 images per target"):
        cli_main(["report", str(run_dir), "--top-images", str(tmp_path / "absent"), "--top", "0"])
    assert not (tmp_path / "r.html").exists()


def test_a_run_without_an_activation_objective_is_noted_and_shown_as_before(latent_run, tmp_path, capsys):
    run_dir, real, extractor = latent_run
    other = make_run(tmp_path / "matched" / "run", extractor, {"class_path": "lit_featinv.SquaredL2"})
    cli_main(["report", str(run_dir), str(other), "--label", "sae", "matched", "--top-images", str(real),
              "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    noted = [line for line in err.splitlines() if "report.top_images" in line]
    assert len(noted) == 1 and re.search(r"report.top_images: run 'matched' has loss SquaredL2, not an activation "
                                         r"objective", noted[0])
    text = (tmp_path / "r.html").read_text()
    assert text.count('class="real"') == len(LATENTS)  # the latent run's targets only
    assert "run &#x27;matched&#x27; has loss SquaredL2" in text  # the note on the page too
    assert text.count("<b>act ") == len(LATENTS) * (2 + 4)  # the latent run's generations and real images only
