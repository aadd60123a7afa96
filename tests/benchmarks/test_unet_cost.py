"""benchmarks/unet_cost.py (issue 22): what one guided iteration of the pixel preset costs, by kind of operator."""
import sys

import pytest
import torch
from diffusers import UNet2DModel

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import unet_cost  # noqa: E402


@pytest.fixture(scope="module")
def unet():
    return UNet2DModel.from_pretrained(unet_cost.UNET, subfolder="unet").eval().requires_grad_(False)


def test_the_shares_cover_the_zoo_unets_attention_and_convolutions(unet):
    shares = unet_cost.shares(unet, batch=1)
    assert sorted(shares) == ["attention", "convolution", "other"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["attention"] > 0 and shares["convolution"] > 0  # the zoo UNet has both; a renamed op would read 0


def test_a_timing_runs_the_backward_only_when_asked(unet, monkeypatch):
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or grad(*a, **k))
    assert unet_cost.per_image_ms(unet, 1, False, 1) > 0 and not calls
    assert unet_cost.per_image_ms(unet, 1, True, 1) > 0 and len(calls) == 2  # warm-up and one timed call
