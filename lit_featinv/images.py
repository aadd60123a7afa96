"""Image files <-> tensors: reading any PNG/JPEG mode, 8-bit quantisation, atomic PNG writes, grids."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from PIL import Image

UMASK = os.umask(0o22)
os.umask(UMASK)  # read once: the process's umask
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def load_image(path: str) -> torch.Tensor:
    """An image file -> float tensor [C, H, W] in [0, 1]; C = 1 (grayscale) or 3 (colour).

    16-bit images keep their precision; alpha is dropped (as PIL's ``convert``); palette images become RGB.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(img, dtype=np.float64) / 65535.0
        elif img.mode == "F":
            arr = np.asarray(img, dtype=np.float64)
        else:
            img = img.convert("L" if img.mode in ("1", "L", "LA", "La") else "RGB")
            arr = np.asarray(img, dtype=np.float64) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr)).float()
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t.clamp(0, 1)


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] float in [0, 1] -> uint8, exactly as it is stored in an 8-bit PNG."""
    return images01.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def save_png(image: torch.Tensor, path: str) -> None:
    """Write a uint8 [C, H, W] tensor as PNG atomically (temporary file in the same folder, then rename)."""
    arr = image.cpu().numpy()
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # as open() would create it (mkstemp gives 0600)
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(arr).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def grid(images: list[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """uint8 [C, H, W] images side by side (resized to the first one's height, gray if mixed channels)."""
    height = images[0].shape[-2]
    channels = max(img.shape[0] for img in images)
    tiles = []
    for img in images:
        if img.shape[-2] != height:
            w = max(1, round(img.shape[-1] * height / img.shape[-2]))
            img = torch.nn.functional.interpolate(img[None].float(), size=(height, w), mode="nearest")[0].to(torch.uint8)
        tiles += [img.expand(channels, -1, -1), torch.full((channels, height, pad), 255, dtype=torch.uint8)]
    return torch.cat(tiles[:-1], dim=2)
