"""benchmarks/naturalness.py and the time-to-quality table (issue 22, item 5): KID tells a shifted feature set from
one of the same distribution; the table shows naturalness beside the match, with the real targets as the first row."""
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import naturalness  # noqa: E402
import time_to_quality  # noqa: E402


def test_kid_is_near_zero_for_the_same_distribution_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    reference = torch.randn(1000, 32, generator=gen) * 5 + 3  # raw scale: standardised inside
    same = torch.randn(64, 32, generator=gen) * 5 + 3
    shifted = same + 5
    assert abs(naturalness.kid(same, reference)) < 0.05
    assert naturalness.kid(shifted, reference) > 20 * abs(naturalness.kid(same, reference))
    assert naturalness.kid(shifted * 0 + 3, reference) > naturalness.kid(same, reference)  # a collapsed set


def test_a_runs_naturalness_reads_its_prior_scores(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"image": f"images/{i}.png", "prior_score": s} for i, s in enumerate([0.3, 0.1, 0.2, None])]
    (run / "metrics.jsonl").write_text("\n".join(map(__import__("json").dumps, rows)) + "\n")
    monkeypatch.setattr(naturalness, "features", lambda paths: torch.zeros(len(paths), 2))
    monkeypatch.setattr(naturalness, "reference_features", lambda folder: torch.ones(5, 2))
    got = naturalness.naturalness(str(run))
    assert got["prior_score_median"] == pytest.approx(0.2) and got["prior_score_p90"] == pytest.approx(0.3)
    assert got["kid"] > 0


def test_the_table_puts_naturalness_beside_the_match(tmp_path):
    natural = {"prior_score_median": 0.1, "prior_score_p90": 0.2, "kid": 1.5}
    rows = [{"case": "pixel_resnet", "variant": "(the targets: real test images)", "images": 4, **natural},
            {"case": "pixel_resnet", "variant": "preset", "images": 4, "nfe": 400, "backward": 400, "s_per_image": 8.0,
             "cos_mean": 0.99, "cos_worst": 0.95, "agreement": 1.0, **natural},
            {"case": "pixel_resnet", "variant": "fast", "images": 4, "nfe": 100, "backward": 100, "s_per_image": 2.0,
             "cos_mean": 0.98, "cos_worst": 0.94, "agreement": 0.75, **natural | {"kid": 9.0}}]
    time_to_quality.write(SimpleNamespace(out=str(tmp_path)), rows, "| header |")
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[-1] == ("| pixel_resnet | fast | 4 | 100 | 100 | 2.00 | 0.25 | 0.9800 | 0.9400 | 75% | 0.1000 "
                         "| 0.2000 | 9.00 |")
    assert table[-3].startswith("| pixel_resnet | (the targets: real test images) | 4 |") and "| 1.50 |" in table[-3]
    assert (tmp_path / "time_to_quality.png").stat().st_size > 0


def test_a_variant_by_its_flags_and_by_name():
    assert time_to_quality.variant("preset_K4_stop0.99") == ["--model.init_args.recurrence", "4",
                                                             "--model.init_args.stop_cosine", "0.99"]
    with pytest.raises(SystemExit, match="is not K<n>"):
        time_to_quality.variant("preset_Q3")
