"""Holes for inpainting: random rectangles and free-form strokes, as masks (1 = fill this).

Each mask is one of two kinds, drawn with equal odds:
- a **rectangle**, height and width each uniform in [hole_min, hole_max] pixels (the
  inpaint family's defaults, 8 to 16 on 32x32 digits: a quarter to a half of each side),
  its centre uniform in the middle half of the image (where a centred digit is), clipped to it;
- a **free-form stroke** (as brushes draw them, Yu et al. 2019): a polyline of 3 to 6
  vertices, the first uniform in the middle half, each segment 4 to 12 pixels long at a
  uniform angle, drawn with a round brush of radius 1.5 to 2.5 pixels, kept inside the image.

Sizes scale with the image: the pixel ranges are for 32x32 and grow by image_size / 32.
Deterministic for a torch.Generator: the held-out digits' holes never change between runs.
"""

from __future__ import annotations

import functools
import math

import torch

RECTANGLE, STROKE = 0, 1
KINDS = ("rectangle", "stroke")
VERTICES = (3, 6)
SEGMENT = (4.0, 12.0)  # pixels at 32x32
RADIUS = (1.5, 2.5)


def _uniform(g: torch.Generator, lo: float, hi: float, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def rectangle(size: int, hole_min: int, hole_max: int, g: torch.Generator) -> torch.Tensor:
    """float {0, 1} [size, size]: one rectangle of sides hole_min .. hole_max (inclusive)."""
    h, w = (int(torch.randint(hole_min, hole_max + 1, (1,), generator=g)) for _ in range(2))
    cy, cx = (float(c) for c in _uniform(g, size / 4, 3 * size / 4, 2))
    top = min(max(0, round(cy - h / 2)), size - h)
    left = min(max(0, round(cx - w / 2)), size - w)
    mask = torch.zeros(size, size)
    mask[top : top + h, left : left + w] = 1
    return mask


@functools.cache
def _grid(size: int) -> torch.Tensor:
    """[size, size, 2]: each pixel's (row, column), made once per image size."""
    ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    return torch.stack([ys, xs], -1)


def stroke(size: int, g: torch.Generator) -> torch.Tensor:
    """float {0, 1} [size, size]: one free-form brush stroke (see the module docstring)."""
    k = size / 32
    vertices = int(torch.randint(VERTICES[0], VERTICES[1] + 1, (1,), generator=g))
    radius = float(_uniform(g, *RADIUS)) * k
    point = _uniform(g, size / 4, 3 * size / 4, 2)
    grid = _grid(size)
    mask = torch.zeros(size, size, dtype=torch.bool)
    for _ in range(vertices - 1):
        angle = float(_uniform(g, 0.0, 2 * math.pi))
        length = float(_uniform(g, *SEGMENT)) * k
        step = torch.tensor([math.sin(angle), math.cos(angle)]) * length
        end = (point + step).clamp(radius, size - 1 - radius)
        d = end - point
        t = ((grid - point) @ d / d.dot(d).clamp_min(1e-6)).clamp(0, 1)
        nearest = point + t[..., None] * d
        mask |= (grid - nearest).norm(dim=-1) <= radius
        point = end
    return mask.float()


def holes(
    n: int, size: int, hole_min: int, hole_max: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masks float {0, 1} [n, 1, size, size], kinds int64 [n]: RECTANGLE or STROKE)."""
    k = size / 32
    lo, hi = max(1, round(hole_min * k)), min(size, round(hole_max * k))
    kinds = torch.randint(0, 2, (n,), generator=g)
    masks = [rectangle(size, lo, hi, g) if kind == RECTANGLE else stroke(size, g) for kind in kinds]
    return torch.stack(masks).unsqueeze(1), kinds


def masked(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image a caller sends for a hole: its pixels inside the hole are not to be used, so
    the generator sees them as 0 (mid grey in [-1, 1]) beside the mask."""
    return image * (1 - mask)
