"""Differentiable preprocessing: an image in [0, 1] -> the input a vision network expects.

Generated and reference images take exactly this path, so a real image scores its own feature. Each extractor
builds it from its model's own eval transform; ``model.extractor.preprocess`` overrides any of its arguments.
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


def straight_through_round(x: torch.Tensor, levels: int = 255, clamp: bool = True) -> torch.Tensor:
    """Round to 8 bits in the forward pass (clamped to [0, 1] first unless ``clamp`` is False); identity gradient."""
    y = x.clamp(0, 1) if clamp else x
    return x + (y.mul(levels).round().div(levels) - x).detach()


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grayscale <-> RGB: repeat one channel, or take the luma of three; drop an alpha channel."""
    have = x.shape[1]
    if have == channels:
        return x
    if have in (2, 4):  # gray+alpha, RGBA
        return match_channels(x[:, : have - 1], channels)
    if have == 1:
        return x.expand(-1, channels, -1, -1)
    if have == 3 and channels == 1:
        return (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    raise ValueError(f"cannot convert a {have}-channel image to {channels} channels")


def pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)


class Preprocess(nn.Module):
    """Channels, optional 8-bit rounding, resize, center crop, normalisation; all differentiable torch ops.

    Args:
        resize: an int resizes the shorter side to it, the longer one keeping the aspect ratio (torchvision's
            ``Resize(int)``); ``[height, width]`` resizes to exactly that; None: no resize.
        crop: ``[height, width]`` (or an int) taken from the center after the resize: the network's input size;
            None: no crop. A square image resized to the crop size is not cropped.
        interpolation: ``bilinear``, ``bicubic``, ``nearest`` or ``area``.
        antialias: low-pass filter when downsampling with ``bilinear``/``bicubic`` (as PIL and torchvision's
            ``Resize(antialias=True)``); an enlargement is never filtered (torchvision's ``TF.resize`` of a tensor
            without antialiasing, as the authors enlarged 512 -> 518 px for ViT-H/14).
        mean, std: per-channel normalisation of the [0, 1] input.
        in_chans: channels the network takes.
        quantize: straight-through 8-bit rounding before and after the resize ("as if saved as PNG").
        clamp: clamp to [0, 1] before that rounding; False lets the network see values outside [0, 1] that a saved
            PNG would clip (the authors' code).
        key: the config key named in errors.
    """

    def __init__(self, resize: int | tuple[int, int] | None = None, crop: int | tuple[int, int] | None = None,
                 interpolation: str = "bilinear", antialias: bool = True, mean: tuple[float, ...] = (0.0,),
                 std: tuple[float, ...] = (1.0,), in_chans: int = 3, quantize: bool = False, clamp: bool = True,
                 key: str = "model.extractor.preprocess"):
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"{key}.interpolation", f"{interpolation!r} is not one of {list(INTERPOLATIONS)}")
        self.resize_to = resize if resize is None or isinstance(resize, int) else pair(resize)
        self.crop = None if crop is None else pair(crop)
        sizes = [s for s in ((self.resize_to,) if isinstance(self.resize_to, int) else self.resize_to or ())]
        if any(s < 1 for s in sizes + list(self.crop or ())):
            raise ConfigError(key, f"resize {resize} and crop {crop} must be positive")
        if self.crop and self.resize_to is not None:
            short = (self.resize_to,) * 2 if isinstance(self.resize_to, int) else self.resize_to
            if (isinstance(self.resize_to, int) and min(self.crop) > self.resize_to) or \
                    (not isinstance(self.resize_to, int) and (self.crop[0] > short[0] or self.crop[1] > short[1])):
                shown = self.resize_to if isinstance(self.resize_to, int) else list(self.resize_to)
                raise ConfigError(f"{key}.crop", f"{list(self.crop)} is larger than the resize to {shown}: "
                                                 f"the crop must fit inside the resized image")
        self.interpolation, self.antialias = interpolation, antialias
        self.in_chans, self.quantize, self.clamp, self.key = in_chans, quantize, clamp, key
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if (mean.numel() not in (1, in_chans)) or (std.numel() not in (1, in_chans)):
            raise ConfigError(key, f"mean/std need 1 or {in_chans} values, got {mean.tolist()} / {std.tolist()}")
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    @classmethod
    def with_overrides(cls, defaults: dict, overrides: dict | None, key: str = "model.extractor.preprocess"):
        """The model's own transform (``defaults``) with the config's ``overrides`` of any argument."""
        allowed = set(inspect.signature(cls).parameters) - {"key"}
        unknown = sorted(set(overrides or {}) - allowed)
        if unknown:
            raise ConfigError(key, f"unknown key(s) {unknown}; one of {sorted(allowed)}")
        return cls(**{**defaults, **(overrides or {}), "key": key})

    @property
    def size(self) -> tuple[int, int] | None:
        """The network's input (height, width): the crop."""
        return self.crop

    def resized_shape(self, h: int, w: int) -> tuple[int, int]:
        if self.resize_to is None:
            return h, w
        if isinstance(self.resize_to, int):  # torchvision's Resize(int): shorter side to it, longer one truncated
            short = self.resize_to
            rh, rw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
            th, tw = self.crop or (0, 0)  # a non-square crop wider (taller) than the resized image: stretch to it
            return max(rh, th), max(rw, tw)
        return self.resize_to

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        rh, rw = self.resized_shape(h, w)
        if (rh, rw) != (h, w):
            smooth = self.interpolation in ("bilinear", "bicubic")
            reduced = rh < h or rw < w  # torch's antialiased kernels also change an enlargement (bicubic: a = -0.5)
            x = F.interpolate(x, size=(rh, rw), mode=self.interpolation, antialias=smooth and self.antialias and reduced,
                              **({"align_corners": False} if smooth else {}))
        if self.crop is None:
            return x
        th, tw = self.crop
        top, left = (rh - th) // 2, (rw - tw) // 2
        return x[..., top: top + th, left: left + tw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = match_channels(x.float(), self.in_chans)
        if self.quantize:
            x = straight_through_round(x, clamp=self.clamp)
        x = self.resize(x)
        if self.quantize:
            x = straight_through_round(x, clamp=self.clamp)
        return (x - self.mean) / self.std


def center_crop_transform(size: tuple[int, int], crop_pct: float = 1.0, **kwargs) -> dict:
    """timm's eval transform as :class:`Preprocess` arguments: shorter side to ``floor(size / crop_pct)``, center crop."""
    return {"resize": math.floor(min(size) / crop_pct + 1e-6), "crop": tuple(size), **kwargs}
