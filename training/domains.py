"""Two image sets that no pair links, for unpaired translation (cyclegan): MNIST digits (domain
A) and digits drawn in another style (domain B), made procedurally from other digits.

Domain B, "ink on paper" (`paper_style`): each digit's strokes thickened (a 3x3 maximum,
about 1 px wider on every side), drawn in dark ink (0.1) on light paper (0.8 on [0, 1]) whose
texture is a smooth random field (a 4x4 grid of uniform values in [-0.1, 0.1], bicubically
upsampled) plus grain (uniform in [-0.04, 0.04] per pixel), seeded per image.

The 4,000 training digits are split once (a fixed permutation) into two halves of 2,000: the
first half is domain A as it is, the second is rendered as domain B, so no B image shows a
digit an A image shows, and training draws A and B batches with independent shuffles. The
held-out digits are given in both domains (A as they are, B rendered from the same digits)
so that evaluation can compare an A → B translation with the digit's own B rendering.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DOMAIN_SEED = 1_2017  # the split of the training digits and the paper textures
INK, PAPER = 0.1, 0.8
TEXTURE, GRAIN = 0.1, 0.04


def paper_style(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Domain B of `images` ([N, 1, H, W] white digits on black in [-1, 1]): thick dark ink on
    textured light paper, in [-1, 1]. Deterministic for `seed`."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape
    stroke = (F.max_pool2d(images, 3, 1, 1) + 1) / 2  # [0, 1], thicker
    field = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
    texture = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=False)
    grain = torch.rand(n, 1, h, w, generator=g) * 2 - 1
    paper = PAPER + TEXTURE * texture + GRAIN * grain
    drawn = paper * (1 - stroke) + INK * stroke
    return (drawn * 2 - 1).clamp(-1, 1)


def halves(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training digits' indices of domain A and of domain B (disjoint, fixed)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(DOMAIN_SEED))
    return order[: n // 2].sort().values, order[n // 2 : 2 * (n // 2)].sort().values
