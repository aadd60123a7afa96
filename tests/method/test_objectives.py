"""Objectives beyond matching (lit_featinv.method.losses: Activation, Projection, Diverse): values by hand, gradients through
the real guidance path on a linear extractor (closed form), the guidance's shaping of an unbounded loss, and a guided
run through the CLI that raises a channel's activation."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from conftest import batch_of, build_module, cli_config
from lit_featinv import (Activation, CleanEstimateGradient, CosineDistance, Diverse, ModuleExtractor, Projection,
                         SquaredL2, TimmExtractor, UNetGradient)
from lit_featinv.app.cli import main
from lit_featinv.errors import ConfigError
from lit_featinv.runs.images import load_image
from lit_featinv.method.sampling import split_prediction

IDENTITY = {"resize": None, "crop": None, "in_chans": 1, "mean": (0.0,), "std": (1.0,)}
WEIGHT = torch.tensor([1.0, -2.0, 0.5])  # the 1x1 convolution's weights, one per output channel (one input channel)
BIAS = torch.tensor([0.3, 0.0, -1.0])


def linear_extractor(bias: torch.Tensor = BIAS) -> ModuleExtractor:
    """A 1x1 convolution (1 -> 3 channels), no preprocessing, average pooled: f_c = WEIGHT_c * mean(x) + bias_c, so
    d f_c / d x = WEIGHT_c / (H W) at every pixel."""
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(WEIGHT.view(3, 1, 1, 1))
        conv.bias.copy_(bias)
    return ModuleExtractor(conv, preprocess=IDENTITY)


def decode(x0):
    return (x0 + 1) / 2  # a pixel prior's clean sample -> image in [0, 1], as FeatureInversion.to_image


def denoise(z, t):
    return 0.3 * z  # a linear "UNet": d eps / d z = 0.3


def guided_gradient(guidance, loss, target, z, abar=torch.tensor(0.6)):
    extractor = linear_extractor()
    return guidance.gradient(denoise, decode, lambda image: loss(extractor(image), target), z, 500, abar, "epsilon")[2]


def by_hand(feature_grad: torch.Tensor, z: torch.Tensor, through_unet: bool, abar=torch.tensor(0.6)) -> torch.Tensor:
    """The image gradient of a loss whose gradient w.r.t. the features is ``feature_grad`` [B, 3]: through the linear
    extractor (WEIGHT / HW per pixel), the decoder (1/2) and, for the UNet's gradient, d x0 / d z."""
    pixels = z.shape[-1] * z.shape[-2]
    per_sample = (feature_grad * WEIGHT).sum(1) / pixels / 2
    if through_unet:  # x0 = (z - sqrt(1 - abar) * 0.3 z) / sqrt(abar)
        per_sample = per_sample * (1 - (1 - abar).sqrt() * 0.3) / abar.sqrt()
    return per_sample.view(-1, 1, 1, 1).expand_as(z)


def key_of(err) -> str:
    assert "\n" not in str(err.value)
    return err.value.key


# ---- values by hand --------------------------------------------------------------------------------------------------

def test_activation_is_the_negated_channel_or_the_channel_of_a_one_hot_target():
    features = torch.tensor([[1.0, 2.0, 3.0], [4.0, -5.0, 6.0]])
    assert torch.equal(Activation(channel=1)(features, torch.zeros(2, 3)), torch.tensor([-2.0, 5.0]))
    one_hot = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert torch.equal(Activation()(features, one_hot), torch.tensor([-3.0, -4.0]))


def test_projection_is_the_negated_projection_on_the_targets_direction():
    features = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    target = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    torch.testing.assert_close(Projection()(features, target), torch.tensor([-4.0, -0.6]))


def test_diverse_subtracts_the_mean_cosine_distance_to_the_other_generations_of_the_same_target():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    target = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    base = SquaredL2()(features, target)  # [1, 1, 0, 0]
    c = 1 - 1 / 2 ** 0.5  # cosine distance of (1, 0) or (0, 1) to (1, 1)
    diversity = torch.tensor([(1 + c) / 2, (1 + c) / 2, c, 0.0])  # row 3 is alone with its target
    torch.testing.assert_close(Diverse(SquaredL2(), weight=0.5)(features, target), base - 0.5 * diversity)
    torch.testing.assert_close(Diverse(SquaredL2()).image_loss(features, target), base)  # the best image: no term


def test_diverse_with_weight_0_is_the_wrapped_loss_exactly():
    features = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    target = torch.randn(2, 5, generator=torch.Generator().manual_seed(1)).repeat(2, 1)
    for loss in (SquaredL2(), CosineDistance(), Projection()):
        value, wrapped = Diverse(loss, weight=0.0)(features, target), loss(features, target)
        assert torch.equal(value, wrapped)
        assert torch.equal(torch.autograd.grad(value.sum(), features)[0],
                           torch.autograd.grad(wrapped.sum(), features)[0])


def test_bad_values_stop_with_one_line_naming_the_key():
    features = torch.ones(2, 3)
    with pytest.raises(ConfigError) as err:
        Activation(channel=3)(features, torch.zeros(2, 3))
    assert key_of(err) == "model.loss.channel" and "out of range of the extractor's 3-value feature" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Activation(channel=-1)
    assert key_of(err) == "model.loss.channel"
    for target in (torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0], [1.0, 0, 0]]),
                   torch.zeros(2, 3), torch.zeros(2, 4)):
        with pytest.raises(ConfigError) as err:
            Activation()(features, target)
        assert key_of(err) == "model.loss.channel" and "one-hot" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Projection()(features, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert key_of(err) == "data" and "no direction" in str(err.value)
    for weight in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError) as err:
            Diverse(SquaredL2(), weight=weight)
        assert key_of(err) == "model.loss.weight"


# ---- gradients through the real guidance path, against the closed form -----------------------------------------------

@pytest.mark.parametrize("guidance", [CleanEstimateGradient(), UNetGradient()], ids=["clean", "unet"])
def test_activation_and_projection_gradients_are_the_closed_form(guidance):
    z = torch.randn(2, 1, 4, 6, generator=torch.Generator().manual_seed(0))
    one_hot = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    grad = guided_gradient(guidance, Activation(channel=2), torch.zeros(2, 3), z)
    torch.testing.assert_close(grad, by_hand(-torch.tensor([[0.0, 0.0, 1.0]] * 2), z, guidance.through_unet),
                               atol=1e-6, rtol=1e-5)
    grad = guided_gradient(guidance, Activation(), one_hot, z)
    torch.testing.assert_close(grad, by_hand(-one_hot, z, guidance.through_unet), atol=1e-6, rtol=1e-5)
    direction = torch.tensor([[3.0, 0.0, 4.0], [-1.0, 2.0, 2.0]])
    grad = guided_gradient(guidance, Projection(), direction, z)
    torch.testing.assert_close(grad, by_hand(-direction / direction.norm(dim=1, keepdim=True), z,
                                             guidance.through_unet), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("guidance", [CleanEstimateGradient(), UNetGradient()], ids=["clean", "unet"])
def test_diverse_gradient_is_each_generations_own_with_the_others_held_fixed(guidance):
    """Two generations of one target and one alone: d/d f_i of -weight * (1 - cos(f_i, f_j)) with f_j fixed is
    weight * (f_j/|f_j| - cos * f_i/|f_i|) / |f_i|; the lone row gets the wrapped loss's gradient only."""
    z = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    weight = 0.7
    grad = guided_gradient(guidance, Diverse(Activation(), weight=weight), target, z)
    with torch.no_grad():
        f = linear_extractor()(decode(split_prediction(denoise(z, 500), z, torch.tensor(0.6), "epsilon")[1]))
    unit = F.normalize(f, dim=1)
    feature_grad = -target.clone()
    for i, j in ((0, 1), (1, 0)):
        cos = (unit[i] * unit[j]).sum()
        feature_grad[i] += weight * (unit[j] - cos * unit[i]) / f[i].norm()
    torch.testing.assert_close(grad, by_hand(feature_grad, z, guidance.through_unet), atol=1e-6, rtol=1e-5)


def test_diverse_pushes_generations_of_one_target_apart_and_leaves_a_lone_one_alone():
    features = torch.tensor([[1.0, 0.2], [0.9, 0.5], [1.0, 0.2]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    term = Diverse(SquaredL2(), weight=1.0)(features, target) - SquaredL2()(features, target)
    grad = torch.autograd.grad(term.sum(), features)[0]
    assert term[2] == 0 and torch.equal(grad[2], torch.zeros(2))
    with torch.no_grad():
        cos = F.cosine_similarity(features[0], features[1], dim=0)
        for i, j in ((0, 1), (1, 0)):  # a descent step on one generation lowers its cosine to the other
            step = features[i] - 0.1 * grad[i]
            assert F.cosine_similarity(step, features[j], dim=0) < cos - 1e-4


# ---- the guidance's shaping: only the gradient's direction counts ----------------------------------------------------

@pytest.mark.parametrize("guidance", [CleanEstimateGradient(scale=0.5), UNetGradient(scale=0.5, clip_theta=0.0)],
                         ids=["clean-clipped", "unet-unclipped"])
def test_an_unbounded_loss_guides_by_its_gradients_direction_only(guidance):
    """Activation's loss has no lower bound: a channel at -1e6 or with its loss scaled 1e6x gives the same guided
    prediction, whose change is at most w times the noise's norm per sample."""
    z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    abar = torch.tensor(0.6)

    def guided(extractor, scale):
        objective = lambda image: scale * Activation(channel=1)(extractor(image), torch.zeros(2, 3))  # noqa: E731
        return guidance(denoise, decode, objective, z, 500, abar, "epsilon", 0.5)[0]

    plain = guided(linear_extractor(), 1.0)
    for extractor, scale in ((linear_extractor(torch.tensor([0.0, 1e6, 0.0])), 1.0), (linear_extractor(), 1e6)):
        torch.testing.assert_close(guided(extractor, scale), plain)
    eps = denoise(z, 500)
    change = (plain - eps).flatten(1).norm(dim=1)
    assert torch.isfinite(plain).all() and (change > 0).all()
    assert (change <= 0.5 * eps.flatten(1).norm(dim=1) * (1 + 1e-5)).all()


# ---- a guided run through the CLI ------------------------------------------------------------------------------------

def own_activations(root, timm_dir, extractor_args):
    """Per generation, the activation of the channel its one-hot target names, measured on the saved PNG."""
    extractor = TimmExtractor(f"local-dir:{timm_dir}", **extractor_args)
    values = []
    for row in (json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()):
        assert row["status"] == "ok"
        with torch.no_grad():
            f = extractor(load_image(root / row["image"])[None])[0]
        values.append(float(f[int(row["id"].rsplit("/", 1)[1])]))
    return values


def test_a_guided_run_raises_each_targets_channel_above_the_unguided_run(tmp_path, pixel_prior, timm_dir):
    """Two channels (``select``), one one-hot target each (``channel: null``), 2 generations per target: with the
    same seeds, every guided generation's channel is higher than without guidance."""
    extractor = {"layer": "layer2.0.conv2", "select": [3, 11]}  # before any ReLU: no channel stuck at 0
    np.save(tmp_path / "onehot.npy", np.eye(2, dtype=np.float32))
    runs = {}
    for scale in (0.0, 1.0):
        config = cli_config(pixel_prior, timm_dir, tmp_path, loss={"class_path": "lit_featinv.Activation"},
                            num_inference_steps=4)
        config["model"]["init_args"]["extractor"]["init_args"] |= extractor
        config["model"]["init_args"]["guidance"]["init_args"]["scale"] = scale
        config["data"]["init_args"] = {"features": str(tmp_path / "onehot.npy"), "batch_size": 2}
        (tmp_path / f"run{scale}.yaml").write_text(yaml.safe_dump(config))
        main(["predict", "--config", str(tmp_path / f"run{scale}.yaml"), "--trainer.default_root_dir",
              str(tmp_path / f"out{scale}")])
        runs[scale] = own_activations(tmp_path / f"out{scale}", timm_dir, extractor)
    assert len(runs[1.0]) == 4
    assert all(guided > unguided for guided, unguided in zip(runs[1.0], runs[0.0])), runs


def test_diverse_runs_through_the_module_with_both_best_image_candidates(pixel_prior, timm_dir, image_dir):
    module = build_module(pixel_prior, timm_dir, loss=Diverse(SquaredL2(), weight=0.5), samples_per_target=2,
                          best_from_guided=True)
    module.on_predict_start()
    records = module.predict_step(batch_of(image_dir, limit=2))
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert all(r["metrics"]["checks"] is None for r in records)  # no check networks configured
    assert all(np.isfinite(v) for r in records for k, v in r["metrics"].items() if k != "checks")
