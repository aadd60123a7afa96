"""benchmarks/posterior.py: its features, measures and a tiny end-to-end run, whose exact draws a report reads as a
reference run."""
import json
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import invariant_features as inv  # noqa: E402
import posterior  # noqa: E402


def test_the_blur_matrix_is_the_invariance_benchmarks_blur():
    images = torch.rand(3, 1, 32, 32, dtype=torch.float64)
    matrix = posterior.gaussian_blur_matrix(2.0)
    torch.testing.assert_close((images.flatten(1) @ matrix.T).view_as(images), inv.blur(images, 2.0))
    kept = torch.linalg.matrix_rank(posterior.truncated(matrix, posterior.BLUR_RTOL), rtol=1e-9)
    assert 150 < int(kept) < 300  # the detail above ~1 / (2 pi sigma) cycles per pixel is its null space


def test_the_features_have_the_null_spaces_they_claim():
    world = posterior.mixture()
    found = posterior.feature_matrices(world, posterior.FEATURES)
    ranks = {name: int(torch.linalg.matrix_rank(m)) for name, m in found.items()}
    assert ranks["left_half"] == 512 and ranks["random16"] == 16 and ranks["pca32"] == 32
    image = torch.zeros(32, 32, dtype=torch.float64)
    image[:, 16:] = 1  # the right half only
    assert (found["left_half"] @ image.flatten()).abs().max() == 0
    pca = found["pca32"]
    torch.testing.assert_close(pca @ pca.T, torch.eye(32, dtype=torch.float64))


def test_the_held_out_features_have_the_null_spaces_they_claim():
    found = posterior.feature_matrices(posterior.mixture(), posterior.HELD_OUT)
    assert {name: int(torch.linalg.matrix_rank(m)) for name, m in found.items()} == {
        "top_half": 512, "pool4": 64, "random64": 64}
    image = torch.zeros(32, 32, dtype=torch.float64)
    image[16:] = 1  # the bottom half only
    assert (found["top_half"] @ image.flatten()).abs().max() == 0
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64).repeat(16, 16)  # zero mean per 4 x 4 block
    assert (found["pool4"] @ checker.flatten()).abs().max() < 1e-12
    torch.testing.assert_close(found["pool4"] @ torch.ones(1024, dtype=torch.float64), torch.ones(64, dtype=torch.float64))
    random16 = posterior.feature_matrices(posterior.mixture(), ["random16"])["random16"]
    assert not torch.allclose(found["random64"][:16], random16)  # another draw, not random16's extended


def test_the_goal_line_judges_spread_residual_and_half_the_guided_samplers_sw():
    rows = {"reference": {"residual": 0.1}, "exact x 16": {"null_spread": 1.0, "residual": 0.1, "sw": 0.04},
            "guided": {"null_spread": 0.97, "residual": 0.19, "sw": 0.096},
            "wide": {"null_spread": 1.3, "residual": 0.21, "sw": 0.048}}
    line = posterior.goal_line(rows, 16)
    assert line.startswith("Goal 1 (null spread within [0.8, 1.25], residual <= the reference's + 0.1 (0.2000), SW "
                           "<= half of `guided`'s (0.048)): ")
    assert line.endswith(": guided yes / yes / **no**; wide **no** / **no** / yes.")
    rows["exact x 16"]["sw"] = 0.05  # half of guided's is below what 16 exact draws get
    assert "SW <= half of `guided`'s (0.048, below the 0.050 of 16 exact draws: out of reach of 16 generations)):" \
        in posterior.goal_line(rows, 16)
    del rows["guided"]
    assert posterior.goal_line(rows, 16).endswith("(0.2000)): wide **no** / **no**.")


def test_the_measures_of_exact_draws_against_themselves_and_of_a_squeezed_set():
    world = posterior.mixture()
    matrix = posterior.feature_matrices(world, ["random16"])["random16"]
    t = world.sample(2, torch.Generator().manual_seed(0))
    post = world.condition(matrix, t @ matrix.T)
    gen = torch.Generator().manual_seed(1)
    reference, other = post.sample(256, gen), post.sample(256, gen)
    null = post.null_projector()
    same = posterior.measure(other, reference, t, matrix, null, 1.0)
    assert same["null_spread"] == pytest.approx(1.0, abs=0.1) and same["residual"] < 1e-9
    mean = reference.mean(1, keepdim=True)
    squeezed = posterior.measure(mean + 0.5 * (other - mean), reference, t, matrix, null, 1.0)
    assert squeezed["null_spread"] == pytest.approx(0.5, abs=0.06) and squeezed["sw"] > same["sw"]
    assert posterior.verdict(squeezed["null_spread"]) == "squeezes" and posterior.verdict(1.0) == "follows"


def test_the_benchmark_runs_and_writes_its_tables_figure_and_run_folders(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--out", str(out), "--targets", "2", "--generations", "3", "--reference", "32", "--features",
            "left_half,random16", "--samplers", "guided,unguided,fast,particles", "--sampler",
            'fast={"num_inference_steps": 4, "recurrence": 2}', "--sampler",
            'particles={"num_inference_steps": 4, "recurrence": 1, "eta": 1.0, "sampler": {"class_path": '
            '"lit_featinv.ParticleSampler", "init_args": {"particles": 6, "lam": 0.1, "ess_threshold": 1.0}}}']
    assert posterior.main(args) == 0
    assert "left_half guided: 2 x 3 in" in capsys.readouterr().out
    text = (out / "posterior.md").read_text()
    assert "## left_half (A: [512, 1024], null space of dimension 512)" in text
    assert "| exact x 3 | exact |" in text and "| guided | 400 |" in text and "| fast | 8 |" in text
    goals = [line for line in text.splitlines() if line.startswith("Goal 1 (")]
    assert len(goals) == 2 and all("; unguided " in g and "; particles " in g and g.count(" / ") == 8 for g in goals)
    particles = next(line for line in text.splitlines() if line.startswith("| particles | 8 |"))  # 4 x 6 / 3
    assert particles.endswith(", 4.0 |") and " of 2, " in particles  # threshold 1: resampled at every step
    saved = json.loads((out / "posterior.json").read_text())
    assert set(saved["results"]["random16"]) == {"reference", "exact x 3", "guided", "unguided", "fast", "particles"}
    assert (out / "posterior.png").is_file() and (out / "features" / "random16.safetensors").is_file()
    from lit_featinv.app.report import make_report
    run = out / "runs" / "left_half"
    make_report([str(run / "guided"), "--baseline", str(run / "unguided"), "--reference-run", str(run / "exact"),
                 "--out", str(tmp_path / "report.html")])
    page = (tmp_path / "report.html").read_text()
    assert page.count('alt="std map of the reference"') == 2 and "where the reference does not" in page  # its left half
    capsys.readouterr()
    assert posterior.main(args) == 0 and "guided: 2 x 3 in" not in capsys.readouterr().out  # reused
