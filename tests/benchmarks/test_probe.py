"""benchmarks/probe.py: each probe script runs end to end on a tiny setting and writes its table, its Goal 1 lines
and JSON whose draws are on the feature's affine set."""
import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import langevin  # noqa: E402
import null_space  # noqa: E402
import split_gibbs  # noqa: E402


@pytest.mark.parametrize("module, settings, says", [
    (null_space, ["--steps", "3", "--jumps", "2"], "3 levels x 2 jumps = 6 denoiser evaluations"),
    (langevin, ["--levels", "3", "--per-level", "2"], "3 levels x 2 steps + 1 = 7 denoiser evaluations"),
    (split_gibbs, ["--sweeps", "2", "--steps", "2"], "2 sweeps x 2 DDPM steps = 4 denoiser evaluations"),
])
def test_a_tiny_run_writes_its_table_and_goal_lines(tmp_path, module, settings, says):
    name = module.__name__
    assert module.main(["--out", str(tmp_path), "--targets", "2", "--generations", "2", "--reference", "8",
                        "--features", "left_half,pool4"] + settings) == 0
    text = (tmp_path / f"{name}.md").read_text()
    assert f"| left_half | {name} |" in text and says in text
    assert "\npool4: Goal 1 (null spread within [0.8, 1.25], residual <= the reference's + 0.1 (" in text
    found = json.loads((tmp_path / f"{name}.json").read_text())["results"]["left_half"][name]
    assert found["residual"] < (0.1 if module is split_gibbs else 1e-6)  # on the set (split Gibbs: within rho of it)
