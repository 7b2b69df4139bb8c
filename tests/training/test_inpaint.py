"""Inpainting's parts: the holes, the generator's composite, the baseline fill, the evaluation."""

from __future__ import annotations

import torch

from ganserve.training import data
from ganserve.training.config import TrainConfig
from ganserve.training.evaluate import diffusion_fill, evaluate_inpainting
from ganserve.training.inpaint import InpaintGenerator, hole_l1
from ganserve.training.masks import RECTANGLE, STROKE, holes


def test_holes_are_binary_of_both_kinds_in_their_documented_sizes() -> None:
    g = torch.Generator().manual_seed(0)
    masks, kinds = holes(400, 32, 8, 16, g)
    assert masks.shape == (400, 1, 32, 32) and set(masks.unique().tolist()) == {0.0, 1.0}
    assert 150 < int((kinds == RECTANGLE).sum()) < 250
    for mask in masks[kinds == RECTANGLE, 0]:
        rows, cols = mask.any(1).sum().item(), mask.any(0).sum().item()
        assert 8 <= rows <= 16 and 8 <= cols <= 16 and mask.sum() == rows * cols
    strokes = masks[kinds == STROKE].sum((1, 2, 3))
    assert strokes.min() > 10 and strokes.max() < 32 * 32 / 2
    again, _ = holes(400, 32, 8, 16, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)  # a seed gives the same holes


def test_the_held_out_digits_have_fixed_holes_and_training_none() -> None:
    config = TrainConfig.for_family("inpaint")
    train, held = data.load(config)
    assert train.source is None and held.source is not None
    assert held.source.shape == (len(held), 1, 32, 32)
    assert torch.equal(data.load(config)[1].source, held.source)


def test_the_generator_returns_the_image_outside_its_hole_and_never_reads_inside() -> None:
    torch.manual_seed(0)
    netG = InpaintGenerator(1, 5, 8).eval()
    image = torch.rand(4, 1, 32, 32) * 2 - 1
    mask, _ = holes(4, 32, 8, 16, torch.Generator().manual_seed(1))
    out = netG(image, mask)
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    scribbled = image + mask * torch.rand(4, 1, 32, 32)  # other pixels inside the hole
    assert torch.equal(netG(scribbled, mask), out)
    assert not torch.equal(out * mask, image * mask)


def test_hole_l1_averages_over_the_hole_alone() -> None:
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1
    fake, real = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    fake[..., 0, 0], fake[..., 3, 3] = 1.0, 5.0  # inside: one pixel of four off by 1
    assert hole_l1(fake, real, mask).item() == 0.25


def test_the_diffusion_fill_takes_the_surface_its_boundary_sets() -> None:
    ramp = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).repeat(1, 1, 32, 1)  # a linear surface
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 10:20, 8:24] = 1
    filled = diffusion_fill(ramp, mask)
    assert torch.equal(filled * (1 - mask), ramp * (1 - mask))
    assert (filled - ramp).abs().max() < 0.02  # harmonic: a plane is its own solution


def test_evaluation_scores_a_perfect_fill_above_diffusion_and_the_bars_can_fail() -> None:
    config = TrainConfig.for_family("inpaint")
    _, all_held = data.load(config)
    assert all_held.source is not None
    held = data.Split(all_held.image[:200], all_held.label[:200], all_held.source[:200])

    class Oracle(torch.nn.Module):  # the held-out digit itself: the best any fill can do
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return image

    class Blank(torch.nn.Module):  # fills every hole with black
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return image * (1 - mask) - mask

    perfect = evaluate_inpainting(Oracle(), held, None)
    assert perfect["psnr_hole_db"] == 100.0 and perfect["passes"]["psnr_hole_over_diffusion_db"]
    blank = evaluate_inpainting(Blank(), held, None)
    assert blank["max_change_outside_hole"] == 0
    assert not blank["passes"]["psnr_hole_over_diffusion_db"]
    assert blank["psnr_hole_db"] < blank["psnr_hole_diffusion_db"]
