"""pix2pix (Isola, Zhu, Zhou & Efros 2017, arXiv:1611.07004): paired image-to-image translation.

G is a U-Net (`UnetGenerator`), D a PatchGAN (`NLayerDiscriminator`, 70x70 receptive field
with three layers) that judges (source, target) pairs; G's loss adds 100 x L1 to the target.
"""

from __future__ import annotations

import torch
from torch import nn

from ganserve.training.config import TrainConfig
from ganserve.training.paired import PairedTranslation


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: downsample, the inner levels (`submodule`), upsample, and a skip
    connection that concatenates this level's input to its output (except the outermost)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        *,
        outermost: bool = False,
        innermost: bool = False,
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=False)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:  # no norm on the 1x1 bottleneck
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=False)
            layers = [downrelu, downconv, uprelu, upconv, nn.BatchNorm2d(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=False)
            layers = [downrelu, downconv, nn.BatchNorm2d(inner_nc), submodule]
            layers += [uprelu, upconv, nn.BatchNorm2d(outer_nc)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)  # skip connection


class UnetGenerator(nn.Module):
    """netG: source image [N, input_nc, H, W] → image [N, output_nc, H, W] in [-1, 1].

    H and W must be multiples of 2**num_downs; widths grow ngf, 2ngf, 4ngf, then stay at 8ngf.
    """

    def __init__(self, input_nc: int, output_nc: int, num_downs: int, ngf: int = 64) -> None:
        super().__init__()
        self.num_downs = num_downs
        width = [ngf * min(2**level, 8) for level in range(num_downs)]  # inner_nc per level
        block = UnetSkipConnectionBlock(
            width[-2] if num_downs > 1 else output_nc, width[-1], innermost=True
        )
        for level in range(num_downs - 2, 0, -1):
            block = UnetSkipConnectionBlock(
                width[level - 1], width[level], submodule=block, use_dropout=level >= 4
            )
        if num_downs > 1:
            block = UnetSkipConnectionBlock(output_nc, width[0], input_nc, block, outermost=True)
        self.model = block

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)


class NLayerDiscriminator(nn.Module):
    """netD, the PatchGAN: (source, target) [N, input_nc, H, W] → a grid of real/fake logits."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):  # gradually increase the number of filters
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))  # one logit per patch
        self.model = nn.Sequential(*layers)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.model(pair)


def build_generator(config: TrainConfig) -> UnetGenerator:
    """netG for this config (the same call rebuilds it from a checkpoint)."""
    return UnetGenerator(config.channels, config.channels, config.depth, config.ngf)


class Pix2Pix(PairedTranslation):
    """The pix2pix step: D on (A, B) vs (A, G(A)), then G on GAN loss + lambda_l1 x L1."""

    fake_first = True  # as Isola et al.'s backward_D
    d_loss_scale = 0.5
    grid_divisor = 2  # half as many pairs as a generator grid shows (each takes three cells)

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        return build_generator(c), NLayerDiscriminator(2 * c.channels, c.ndf, c.n_layers_d)

    def judged(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([source, image], 1)  # [N, 2C, H, W]: D judges the pair

    def grid_images(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # Rows of 8 in threes: sources, translations, targets.
        source, target = inputs["image"], inputs["target"]
        fake = self.sample(inputs)
        rows = []
        for start in range(0, len(source), 8):
            rows += [source[start : start + 8], fake[start : start + 8], target[start : start + 8]]
        return torch.cat(rows)
