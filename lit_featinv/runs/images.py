"""Image files <-> tensors: reading any PNG/JPEG mode, 8-bit quantisation, atomic PNG writes, labelled grids and
viewing tiles."""
from __future__ import annotations

import functools
import math
import os
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

UMASK = os.umask(0o22)
os.umask(UMASK)  # read once: the process's umask
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def load_image(path: str) -> torch.Tensor:
    """An image file -> float tensor [C, H, W] in [0, 1]; C = 1 (grayscale) or 3 (colour).

    16-bit images keep their precision; alpha is dropped (as PIL's ``convert``); palette images become RGB.
    """
    with Image.open(path) as img:
        img.load()
        return from_pil(img)


def from_pil(img: Image.Image) -> torch.Tensor:
    """A PIL image -> float tensor [C, H, W] in [0, 1], as :func:`load_image` reads it."""
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


VIEW_HEIGHT = 96  # px: a grid enlarges smaller images to at least this (whole factors, nearest neighbour)
TEXT = 14  # px: a grid's title and caption lines


@functools.lru_cache
def font(size: int = 11) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, which matplotlib ships: labels in the scripts it covers (accents, Greek, Cyrillic, ...), where
    PIL's default font draws boxes."""
    import matplotlib
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def pil(image: torch.Tensor) -> Image.Image:
    """uint8 [C, H, W] -> a PIL image (L or RGB)."""
    arr = image.cpu().numpy()
    return Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))


def tile(image: torch.Tensor, height: int) -> Image.Image:
    """uint8 [C, H, W] at ``height`` px: enlarged nearest neighbour (pixels stay visible) or reduced with
    antialiasing."""
    img = pil(image)
    size = (max(1, round(img.width * height / img.height)), height)
    return img.resize(size, Image.NEAREST if img.height < height else Image.LANCZOS)


def fit_height(image: torch.Tensor, height: int) -> torch.Tensor:
    """uint8 [C, H, W] reduced (with antialiasing) to at most ``height`` px high, its aspect kept: a 6000-px target
    is drawn at the size of its generations."""
    if image.shape[-2] <= height:
        return image
    reduced = np.asarray(tile(image, height))
    return torch.from_numpy((reduced[None] if reduced.ndim == 2 else reduced.transpose(2, 0, 1)).copy())


def text_tile(text: str, height: int) -> Image.Image:
    """A grey square with ``text`` wrapped in it; when it does not fit, its end (an id's end tells it apart)."""
    img = Image.new("RGB", (height, height), (230, 230, 230))
    lines, room = textwrap.wrap(text, max(4, height // 7), break_on_hyphens=False), max(1, height // 12)
    ImageDraw.Draw(img).multiline_text((4, 4), "\n".join(lines if len(lines) <= room else ["..."] + lines[1 - room:]),
                                       fill=(80, 80, 80), font=font())
    return img


def grid(title: str, items: list[torch.Tensor | str], captions: list[str], pad: int = 2) -> torch.Tensor:
    """A row of uint8 [C, H, W] images (a str: a text tile in its place) under ``title``, each over its caption, as
    uint8 [3, H', W']; enlarged to the first image's height times the whole factor that reaches
    :data:`VIEW_HEIGHT`."""
    first = next((item for item in items if not isinstance(item, str)), None)
    height = VIEW_HEIGHT if first is None else first.shape[-2] * math.ceil(VIEW_HEIGHT / first.shape[-2])
    tiles = [text_tile(item, height) if isinstance(item, str) else tile(item, height).convert("RGB") for item in items]
    slots = [max(t.width, height) for t in tiles]
    out = Image.new("RGB", (sum(slots) + pad * (len(tiles) - 1), TEXT + height + TEXT), "white")
    draw, x = ImageDraw.Draw(out), 0
    draw.text((2, 1), title, fill="black", font=font())
    for t, slot, text in zip(tiles, slots, captions):
        out.paste(t, (x + (slot - t.width) // 2, TEXT))
        draw.text((x + 2, TEXT + height + 1), text, fill="black", font=font())
        x += slot + pad
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1)
