"""Turning [-1, 1] image tensors into pixels and PNG grids (no torchvision needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] → uint8 [N, H, W, C], rounding to the nearest level."""
    pixels = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Tile [N, C, H, W] images into one uint8 [H', W', C] picture, `nrow` images a row."""
    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    canvas = np.zeros(
        (nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), np.uint8
    )
    for i in range(n):
        y, x = divmod(i, ncol)
        top, left = padding + y * (h + padding), padding + x * (w + padding)
        canvas[top : top + h, left : left + w] = pixels[i]
    return canvas


def save_png(picture: np.ndarray, path: str | Path) -> None:
    """Write a uint8 [H, W, C] (C = 1 or 3) picture as PNG, creating the folder."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture[:, :, 0] if picture.shape[2] == 1 else picture).save(path)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """`grid` then `save_png`."""
    save_png(grid(images, nrow), path)
