"""benchmarks/foresight.py: does the loss at a step pick the generation that ends best."""
import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import foresight  # noqa: E402


def write(folder, per_target):
    """per_target: {id: [(losses at steps 0 and 1, final cosine), ...]}."""
    with open(folder / "trajectories.jsonl", "w") as t, open(folder / "metrics.jsonl", "w") as m:
        for target, gens in per_target.items():
            for g, (loss, cosine) in enumerate(gens):
                t.write(json.dumps({"id": target, "sample": g, "step": [0, 0, 1], "k": [0, 1, 0],
                                    "loss": [loss[0], -99.0, loss[1]], "cosine": [0, 0, 0]}) + "\n")
                m.write(json.dumps({"id": target, "sample": g, "cosine": cosine}) + "\n")


def test_a_step_that_foresees_the_end_scores_every_target_and_one_that_inverts_it_none(tmp_path):
    write(tmp_path, {"a": [((1.0, 3.0), 0.99), ((2.0, 2.0), 0.98), ((3.0, 1.0), 0.97)],
                     "b": [((5.0, 9.0), 0.90), ((4.0, 8.0), 0.95), ((6.0, 7.0), 0.80)]})
    losses, final = foresight.read(str(tmp_path))
    first, second = foresight.foresight(losses, final, 0), foresight.foresight(losses, final, 1)
    assert first["lowest_ends_best"] == 2 and first["targets"] == 2 and abs(first["chance"] - 2 / 3) < 1e-9
    assert first["spearman"] == 1.0  # a: the order at step 0 is the end's; b: too (4 < 5 < 6 -> 0.95 > 0.90 > 0.80)
    assert second["lowest_ends_best"] == 0  # step 1: a's order reversed (k = 1's -99 is not read), b's lowest ends last
    assert second["spearman"] == (-1.0 - 0.5) / 2  # b: ranks (1, 2, 0) at the end against (0, 1, 2) at step 1
