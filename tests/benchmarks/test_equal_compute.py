"""benchmarks/equal_compute.py (issue 35, goal 3): the best saved generation per target, a failed one left out."""
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import equal_compute  # noqa: E402


def test_each_targets_best_generation_is_its_highest_cosine_and_a_failed_target_has_none():
    lines = [{"id": "a", "sample": 0, "cosine": 0.91}, {"id": "a", "sample": 1, "cosine": 0.97},
             {"id": "b", "sample": 0, "cosine": 0.99, "status": "failed"}, {"id": "b", "sample": 1, "cosine": None},
             {"id": "c", "sample": 0, "cosine": 0.5}, {"id": "a", "sample": 2, "cosine": 0.93}]
    best = equal_compute.best_per_target(lines)
    assert [(b["id"], b["cosine"]) for b in best] == [("a", 0.97), ("b", None), ("c", 0.5)]
    assert best[0]["sample"] == 1
