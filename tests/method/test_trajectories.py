"""Per-generation trajectories: the loss and cosine of the clean estimate at every guided iteration, in
trajectories.jsonl beside metrics.jsonl."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import cli_config
from lit_featinv.app.cli import main
from lit_featinv.method.records import TRAJECTORY_FORMAT


def read(path):
    return {(row["id"], row["sample"]): row for row in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("stop_cosine", [None, 0.0])
def test_each_generation_has_its_trajectory_ending_in_its_reported_match(tmp_path, pixel_prior, timm_dir, image_dir,
                                                                         stop_cosine):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, image_dir, early_steps=1, early_recurrence=3,
                                             stop_cosine=stop_cosine)))
    main(["predict", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "out")])
    metrics, trajectories = read(tmp_path / "out" / "metrics.jsonl"), read(tmp_path / "out" / "trajectories.jsonl")
    assert metrics.keys() == trajectories.keys() and len(metrics) == 6
    for key, m in metrics.items():
        tr = trajectories[key]
        assert tr["format"] == TRAJECTORY_FORMAT
        assert len(tr["step"]) == len(tr["k"]) == len(tr["loss"]) == len(tr["cosine"])
        if stop_cosine is None:  # 3 + 2 + 2 guided iterations, then the final image (step 3)
            assert tr["step"] == [0, 0, 0, 1, 1, 2, 2, 3] and tr["k"] == [0, 1, 2, 0, 1, 0, 1, 0]
            assert tr["cosine"][-1] == pytest.approx(m["cosine"], abs=1e-6)
            assert tr["loss"][-1] == pytest.approx(m["loss"], rel=1e-5)
        else:  # every estimate has cosine >= 0 to its target or not: a stopped one ends at its stopping iteration
            assert len(tr["step"]) == m["nfe"] + ("stop_step" not in m)
            if "stop_step" in m:
                assert tr["step"][-1] == m["stop_step"] and tr["cosine"][-1] >= 0
                assert tr["cosine"][-1] == pytest.approx(m["cosine"], abs=1e-6)
        best = min(range(len(tr["loss"])), key=lambda n: tr["loss"][n])  # first of the smallest, as the best image
        assert tr["step"][best] == m["best_step"]
        assert tr["loss"][best] == pytest.approx(m["best_loss"], rel=1e-5)
