"""Inpainting: fill the holes of an image (pix2pix's U-Net with the mask as an extra input
channel, as Pathak et al. 2016's context encoder fills a region from its surroundings).

netG takes (image, mask) (mask 1 = fill this, `masks.py` draws the holes), sees the image with
its hole blanked plus the mask, and returns the U-Net's output inside the hole and the image's
own pixels everywhere else: `image * (1 - mask) + unet * mask`, in the graph, so what lies
outside a hole comes back unchanged (exactly, through the uint8 head). netD is pix2pix's
PatchGAN on (blanked image, mask, image). G's loss: lambda_l1 x L1 inside the hole (the mean
over hole pixels) + the adversarial term. Training draws fresh holes every step; the held-out
digits have fixed ones (`data.py`), so evaluations compare.
"""

from __future__ import annotations

import torch
from torch import nn

from ganserve.training.config import TrainConfig
from ganserve.training.data import Split
from ganserve.training.masks import holes, masked
from ganserve.training.paired import PairedTranslation
from ganserve.training.pix2pix import NLayerDiscriminator, UnetGenerator

MASK_SEED = 7_777  # training holes: their own stream, apart from the batch order's


class InpaintGenerator(nn.Module):
    """netG: (image [N, C, H, W] in [-1, 1], mask [N, 1, H, W] in {0, 1}) → the filled image."""

    def __init__(self, channels: int, depth: int, ngf: int) -> None:
        super().__init__()
        self.unet = UnetGenerator(channels + 1, channels, depth, ngf)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        known = masked(image, mask)
        return known + self.unet(torch.cat([known, mask], 1)) * mask


def build_generator(config: TrainConfig) -> InpaintGenerator:
    """netG for this config (the same call rebuilds it from a checkpoint)."""
    return InpaintGenerator(config.channels, config.depth, config.ngf)


def hole_l1(fake: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |fake - target| over the hole's pixels (and channels)."""
    per_channel = (fake - target).abs() * mask
    return per_channel.sum() / (mask.sum() * fake.shape[1]).clamp_min(1.0)


class Inpaint(PairedTranslation):
    """The paired step with holes: D on (blanked, mask, real) vs (blanked, mask, G's fill)."""

    fake_first = True  # as pix2pix
    d_loss_scale = 0.5
    grid_divisor = 2

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.hole_rng = torch.Generator().manual_seed(config.seed * 1000 + MASK_SEED)

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        return build_generator(c), NLayerDiscriminator(2 * c.channels + 1, c.ndf, c.n_layers_d)

    def pair(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
        target = batch["image"].to(self.device)
        if "source" in batch:  # fixed holes (the held-out digits')
            mask = batch["source"].to(self.device)
        else:
            c = self.config
            mask, _ = holes(len(target), c.image_size, c.hole_min, c.hole_max, self.hole_rng)
            mask = mask.to(self.device)
        return (target, mask), torch.cat([masked(target, mask), mask], 1), target

    def judged(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([source, image], 1)  # [N, 2C + 1, H, W]

    def content_loss(
        self, fake: torch.Tensor, target: torch.Tensor, source: torch.Tensor
    ) -> torch.Tensor:
        return hole_l1(fake, target, source[:, -1:])

    def fixed_inputs(self, n: int, held: Split) -> dict[str, torch.Tensor]:
        assert held.source is not None  # the held-out digits' holes
        pick = torch.linspace(0, len(held) - 1, min(n // self.grid_divisor, len(held))).long()
        return {
            "image": held.image[pick].to(self.device),
            "mask": held.source[pick].to(self.device),
        }

    @torch.no_grad()
    def sample(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        from ganserve.training.gan import evaluating

        with evaluating(self.served_generator) as netG:
            return netG(inputs["image"], inputs["mask"])

    def grid_images(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # Rows of 8 in threes: the holes (white), the fills, the real digits.
        image, mask = inputs["image"], inputs["mask"]
        shown = masked(image, mask) + mask  # the hole drawn white
        fake = self.sample(inputs)
        rows = []
        for start in range(0, len(image), 8):
            rows += [shown[start : start + 8], fake[start : start + 8], image[start : start + 8]]
        return torch.cat(rows)
