"""benchmarks/per_image_gap.py (issue 22): per-image losses against a reference run, and the oracle rescue."""
import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import per_image_gap  # noqa: E402


def run(folder, cosines):
    folder.mkdir()
    rows = [{"id": i, "sample": s, "cosine": c - 0.5 * s} for i, c in cosines.items() for s in (0, 1)]
    (folder / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    return folder


def test_the_rescue_gives_the_images_that_lose_most_the_references_cosine(tmp_path):
    ref = per_image_gap.cosines(run(tmp_path / "ref", {"a": 0.99, "b": 0.98, "c": 0.97, "d": 0.96}))
    var = per_image_gap.cosines(run(tmp_path / "var", {"a": 0.80, "b": 0.97, "c": 0.97, "d": 0.90, "e": 0.5}))
    assert ref == {"a": 0.99, "b": 0.98, "c": 0.97, "d": 0.96}  # sample 0 only
    g = per_image_gap.gap(ref, var, [0, 1, 2, 4])
    assert g["images"] == 4  # "e" is not in the reference
    assert [i for i, _, _ in g["losing_most"]] == ["a", "d", "b", "c"]
    assert g["median"] == pytest.approx(-0.035) and g["mean"] == pytest.approx(-0.065)
    assert g["rescue"][0] == pytest.approx((0.91, 0.80))
    assert g["rescue"][1] == pytest.approx((0.9575, 0.90))  # a rescued
    assert g["rescue"][2] == pytest.approx((0.9725, 0.96))  # a and d
    assert g["rescue"][4] == pytest.approx((0.975, 0.96))  # the reference itself


def test_a_folder_without_metrics_names_the_file(tmp_path):
    with pytest.raises(SystemExit, match="metrics.jsonl: no such file"):
        per_image_gap.cosines(tmp_path)
