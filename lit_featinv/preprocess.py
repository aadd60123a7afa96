"""Differentiable preprocessing: an image in [0, 1] -> the input a vision network expects.

Generated and reference images take exactly this path, so a real image scores its own feature.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")


def straight_through_round(x: torch.Tensor, levels: int = 255) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8 bits in the forward pass; identity gradient (as if saved as PNG)."""
    return x + (x.clamp(0, 1).mul(levels).round().div(levels) - x).detach()


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


class Preprocess(nn.Module):
    """Channels, optional 8-bit rounding, resize + center crop, normalisation; all differentiable.

    Args:
        size: network input (height, width); None keeps the image size.
        interpolation: ``bilinear``, ``bicubic``, ``nearest`` or ``area``.
        crop_pct: resize the shorter side to ``size / crop_pct`` then center-crop ``size`` (timm's eval transform).
        resize_shorter: resize the shorter side (and crop) rather than the whole image to ``size``.
        mean, std: per-channel normalisation after scaling to [0, 1].
        in_chans: channels the network takes.
        quantize: straight-through 8-bit rounding before and after the resize (the paper's setting).
    """

    def __init__(self, size: tuple[int, int] | None = None, interpolation: str = "bilinear", crop_pct: float = 1.0,
                 resize_shorter: bool = True, mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,),
                 in_chans: int = 3, quantize: bool = False):
        super().__init__()
        self.size = tuple(size) if size is not None else None
        self.interpolation = interpolation
        self.crop_pct = crop_pct
        self.resize_shorter = resize_shorter
        self.in_chans = in_chans
        self.quantize = quantize
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if (mean.numel() not in (1, in_chans)) or (std.numel() not in (1, in_chans)):
            raise ValueError(f"mean/std need 1 or {in_chans} values, got {mean.tolist()} / {std.tolist()}")
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is None:
            return x
        h, w = x.shape[-2:]
        th, tw = self.size
        if self.resize_shorter:  # as timm's and torchvision's eval Resize(int): shorter side floored, longer truncated
            short = math.floor(min(th, tw) / self.crop_pct + 1e-6)
            rh, rw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
            rh, rw = max(th, rh), max(tw, rw)
        else:
            rh, rw = th, tw
        if (rh, rw) != (h, w):
            smooth = self.interpolation in ("bilinear", "bicubic")
            x = F.interpolate(x, size=(rh, rw), mode=self.interpolation, antialias=smooth,
                              **({"align_corners": False} if smooth else {}))
        top, left = (rh - th) // 2, (rw - tw) // 2
        return x[..., top: top + th, left: left + tw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = match_channels(x.float(), self.in_chans)
        if self.quantize:
            x = straight_through_round(x)
        x = self.resize(x)
        if self.quantize:
            x = straight_through_round(x)
        return (x - self.mean) / self.std
