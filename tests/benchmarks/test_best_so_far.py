"""benchmarks/best_so_far.py: what a shorter noise optimisation keeps, read off a longer one's trajectories."""
import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import best_so_far  # noqa: E402


def test_best_so_far_is_the_highest_cosine_up_to_the_step(tmp_path, capsys):
    trajectories = [{"step": [0, 1, 2, 3], "cosine": [0.1, 0.5, 0.4, 0.9]},
                    {"step": [0, 1, 2, 3], "cosine": [0.3, None, 0.2, 0.35]}]
    assert best_so_far.best_so_far(trajectories, 0) == [0.1, 0.3]
    assert best_so_far.best_so_far(trajectories, 2) == [0.5, 0.3]
    assert best_so_far.best_so_far(trajectories, 3) == [0.9, 0.35]
    run = tmp_path / "run"
    run.mkdir()
    (run / "trajectories.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trajectories))
    assert best_so_far.main([str(run), "--steps", "2,3,10"]) == 0
    assert "| run | 0.4000 / 0.3000 | 0.6250 / 0.3500 | - |" in capsys.readouterr().out
