"""Features with a known invariance, built from the zoo ResNet (``assets/zoo/fmnist-resnet10t``) as torch modules.

Each class here *is* the zoo's timm ``resnet10t`` (1 channel, 10 classes: a subclass of timm's ``ResNet`` with its
arguments), so the zoo's state dict loads into it unchanged, and its ``forward`` first applies a fixed,
parameter-free transform to the image and then returns the network's pooled 512-d feature (the class posterior:
the softmax over the 10 classes). Whatever that transform throws away, the feature cannot encode: a ground truth
for what an inversion of the feature should leave free to vary (``benchmarks/invariances.py``).

Every module takes images in [0, 1] (background 0), 1 x 32 x 32, and normalises them itself with the classifier's
mean 0.286 and std 0.353; give ``ModuleExtractor`` a preprocess that leaves [0, 1] as it is. Loaded like any module
of your own (``benchmarks/`` on ``sys.path``, or copy this file next to your config)::

    extractor:
      class_path: lit_featinv.ModuleExtractor
      init_args:
        module: {class_path: invariant_features.LeftHalf}
        weights: assets/zoo/fmnist-resnet10t/model.safetensors
        preprocess: {resize: 32, crop: 32, in_chans: 1, mean: [0.0], std: [1.0]}

(:func:`extractor_config` writes that dict.)
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, ResNet

ZOO_RESNET = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "assets", "zoo", "fmnist-resnet10t")
WEIGHTS = os.path.normpath(os.path.join(ZOO_RESNET, "model.safetensors"))
MEAN, STD = 0.286, 0.353  # the classifier's input normalisation (its config.json)
# the zoo's images in [0, 1] are 0 (background) outside the item; a typical Fashion-MNIST test item, padded to
# 32x32, has mean 0.21 and std 0.30 over its pixels (the 32 items in assets/fmnist-test32): where the
# contrast-normalised network puts every image it sees
TYPICAL_MEAN, TYPICAL_STD = 0.21, 0.30
PREPROCESS = {"resize": 32, "crop": 32, "in_chans": 1, "mean": [0.0], "std": [1.0]}  # [0, 1] in, unchanged


class ZooResNet(ResNet):
    """The zoo classifier, plain: the control. Feature: pooled pre-classifier feature (512-d) of the image as it is.

    Invariant to nothing beyond what the network itself has learnt to ignore. :meth:`see` is the transform the
    subclasses change (here the identity); :meth:`logits` the classifier's output on what it sees.
    """

    def __init__(self):
        super().__init__(block=BasicBlock, layers=(1, 1, 1, 1), stem_width=32, stem_type="deep_tiered",
                         avg_down=True, in_chans=1, num_classes=10)

    def see(self, images: torch.Tensor) -> torch.Tensor:
        """What the network is shown, in [0, 1] units (background 0)."""
        return images

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        x = (self.see(images) - MEAN) / STD
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pooled(images)


class LeftHalf(ZooResNet):
    """The network sees the image with its right half set to background (0): the feature is invariant to
    everything in the right half (columns ``W // 2`` and after); the left half it sees as the plain network does."""

    def see(self, images: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros_like(images[..., :1, :])
        keep[..., : images.shape[-1] // 2] = 1
        return images * keep


class ContrastNormalised(ZooResNet):
    """The network sees the image standardised over its pixels (zero mean, unit variance, per image and channel),
    placed at a typical item's mean 0.21 and std 0.30: invariant to brightness and contrast, ``a * x + b`` with
    ``a > 0`` (up to the ``eps`` added to the std); the shape (the standardised image) it sees in full."""

    def __init__(self, eps: float = 1e-4):
        super().__init__()
        self.eps = eps

    def see(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.mean((-2, -1), keepdim=True)
        std = images.std((-2, -1), keepdim=True, unbiased=False)
        return (images - mean) / (std + self.eps) * TYPICAL_STD + TYPICAL_MEAN


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-d Gaussian of radius ceil(3 sigma)."""
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, zero (background) beyond the border; channels blurred alike."""
    k = gaussian_kernel(sigma).to(images)
    c, r = images.shape[1], (len(k) - 1) // 2
    x = F.conv2d(images, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)


class Blurred(ZooResNet):
    """The network sees the image Gaussian-blurred (``sigma`` pixels, zero beyond the border): nearly invariant to
    fine texture, detail above about 1 / (2 pi sigma) cycles per pixel (at sigma 2: a period under ~13 px is
    attenuated, one of 4 px by a factor of about 1e-4); the coarse layout it sees."""

    def __init__(self, sigma: float = 2.0):
        super().__init__()
        self.sigma = sigma

    def see(self, images: torch.Tensor) -> torch.Tensor:
        return blur(images, self.sigma)


class ClassPosterior(ZooResNet):
    """The feature is the classifier's softmax over the 10 classes (10-d, sums to 1): invariant to everything
    the class decision does not depend on; it encodes the class (and how sure the network is of it)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).softmax(-1)


FEATURES = {"control": ZooResNet, "left_half": LeftHalf, "contrast_normalised": ContrastNormalised,
            "blurred": Blurred, "class_posterior": ClassPosterior}


def extractor_config(name: str, init_args: dict | None = None, weights: str = WEIGHTS) -> dict:
    """The ``model.extractor`` config of feature ``name`` (a key of :data:`FEATURES`): ``ModuleExtractor``
    with the module by ``class_path``, the zoo ResNet's weights and a preprocess that keeps [0, 1]."""
    module = {"class_path": f"invariant_features.{FEATURES[name].__name__}"}
    if init_args:
        module["init_args"] = dict(init_args)
    return {"class_path": "lit_featinv.ModuleExtractor",
            "init_args": {"module": module, "weights": weights, "preprocess": dict(PREPROCESS)}}


def load(name: str, **init_args) -> torch.nn.Module:
    """Module ``name`` with the zoo ResNet's weights, in eval mode (float32)."""
    from lit_featinv.models import load_state_dict
    module = FEATURES[name](**init_args)
    module.load_state_dict(load_state_dict(WEIGHTS))
    return module.float().eval().requires_grad_(False)
