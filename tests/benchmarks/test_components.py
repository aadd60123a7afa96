"""benchmarks/components.py: each image gets the component that most likely made it, the total variation between
histograms is 0 for the same shares and 1 for disjoint ones, and a tiny end-to-end run."""
import json
import sys

import torch

from conftest import ROOT
from lit_featinv.models.mixture import GaussianMixture

sys.path.insert(0, str(ROOT / "benchmarks"))
import components  # noqa: E402


def test_each_image_gets_the_component_that_made_it_and_shares_count_them():
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([[3.0, 0, 0, 0], [-3.0, 0, 0, 0]], dtype=torch.float64)
    world = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64), means,
                            torch.zeros(2, 4, 1, dtype=torch.float64), torch.full((2,), 0.3, dtype=torch.float64))
    made = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    x = world.sample_components(made.flatten(), gen).view(2, 6, 4)
    assert torch.equal(components.components(world, x), made)
    s = components.shares(made, 2)
    assert torch.allclose(s, torch.tensor([[1 / 3, 2 / 3], [0.0, 1.0]], dtype=torch.float64))
    assert float(0.5 * (s[0] - s[0]).abs().sum()) == 0 and float(0.5 * (s[1] - torch.tensor([1.0, 0])).abs().sum()) == 1


def test_a_tiny_run_writes_its_table(tmp_path):
    assert components.main(["--out", str(tmp_path), "--targets", "2", "--generations", "8", "--reference", "32",
                            "--features", "left_half"]) == 0
    text = (tmp_path / "components.md").read_text()
    assert "| left_half | null_space |" in text and "| left_half | langevin |" in text
    found = json.loads((tmp_path / "components.json").read_text())["results"]["left_half"]
    assert found["exact x 8"]["tv"] < 0.5 and 0 <= found["langevin"]["top_share"] <= 1
