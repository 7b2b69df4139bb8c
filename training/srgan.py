"""SRGAN (Ledig et al. 2017, arXiv:1609.04802): single-image super-resolution, 2x or 4x.

G is an SRResNet: a 9x9 conv, residual blocks at the low resolution, a long skip, then one
sub-pixel convolution (conv to 4x the channels, PixelShuffle(2); Shi et al. 2016) per factor
of 2 and a 9x9 conv. As in EDSR (Lim et al. 2017) the blocks have no BatchNorm: an image's
pixels never depend on its batch, in training or serving. What G computes is a residual over
the nearest-neighbour upscaled input (global residual learning, as VDSR; Kim et al. 2016),
clamped to [-1, 1]: with the paper's tanh output a 150-step run on MNIST stayed at an
all-black image, where the residual starts from the upscaled digit. D judges high-resolution
images with strided, spectrally normalised convs. G's loss is content (L1 to the real image)
+ a feature loss in the project's digit classifier's feature space (`DigitClassifier.embed`,
standing in for the paper's VGG features) + a small adversarial term (10^-3, as the paper).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.training.classifier import DigitClassifier, to_classifier_input
from ganserve.training.config import TrainConfig
from ganserve.training.paired import PairedTranslation


class ResidualBlock(nn.Module):
    """conv 3x3, PReLU, conv 3x3, plus the block's input (SRResNet's block without BatchNorm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleBlock(nn.Module):
    """Sub-pixel convolution: [N, C, H, W] → conv to 4C channels → PixelShuffle → [N, C, 2H, 2W]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels * 4, 3, 1, 1), nn.PixelShuffle(2), nn.PReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SRResNet(nn.Module):
    """netG: low-resolution image [N, nc, H, W] → [N, nc, scale H, scale W] in [-1, 1].

    Fully convolutional: any H and W, the output always `scale` times larger. The network's
    output is added to the input upscaled nearest-neighbour, then clamped to [-1, 1].
    """

    def __init__(self, nc: int, ngf: int, n_blocks: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(nc, ngf, 9, 1, 4), nn.PReLU())
        # state size. ngf x H x W
        self.body = nn.Sequential(
            *(ResidualBlock(ngf) for _ in range(n_blocks)), nn.Conv2d(ngf, ngf, 3, 1, 1)
        )  # state size. ngf x H x W, added to the head's output (the long skip)
        self.upsample = nn.Sequential(*(UpsampleBlock(ngf) for _ in range(int(math.log2(scale)))))
        # state size. ngf x scale H x scale W
        self.tail = nn.Conv2d(ngf, nc, 9, 1, 4)
        # state size. nc x scale H x scale W: the residual over the upscaled input

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.head(image)
        residual = self.tail(self.upsample(features + self.body(features)))
        return (nearest(image, self.scale) + residual).clamp(-1.0, 1.0)


class SRDiscriminator(nn.Module):
    """netD: high-resolution image [N, nc, S, S] → real/fake logit [N].

    A 3x3 conv, then 4x4 stride-2 convs that double the width (up to 8 ndf) down to 4x4, and
    a 4x4 conv to one logit; every conv spectrally normalised (Miyato et al. 2018), no
    BatchNorm, LeakyReLU(0.2) between.
    """

    def __init__(self, nc: int, ndf: int, image_size: int) -> None:
        super().__init__()

        def conv(cin: int, cout: int, kernel: int, stride: int, padding: int) -> nn.Module:
            return nn.utils.parametrizations.spectral_norm(
                nn.Conv2d(cin, cout, kernel, stride, padding)
            )

        layers: list[nn.Module] = [conv(nc, ndf, 3, 1, 1), nn.LeakyReLU(0.2, True)]
        # state size. ndf x S x S
        width = ndf
        for _ in range(int(math.log2(image_size)) - 2):
            wider = min(width * 2, ndf * 8)
            layers += [conv(width, wider, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            width = wider  # state size. width x s/2 x s/2
        layers.append(conv(width, 1, 4, 1, 0))  # state size. 1 x 1 x 1
        self.main = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main(image).view(-1)


def build_generator(config: TrainConfig) -> SRResNet:
    """netG for this config (the same call rebuilds it from a checkpoint)."""
    return SRResNet(config.channels, config.ngf, config.residual_blocks, config.scale)


def nearest(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Low-resolution images blown up pixel by pixel, to show them in a grid beside the others."""
    return F.interpolate(images, scale_factor=scale, mode="nearest")


def bicubic(images: torch.Tensor, scale: int) -> torch.Tensor:
    """The baseline SR must beat: bicubic upscaling, clamped to [-1, 1]."""
    up = F.interpolate(images, scale_factor=scale, mode="bicubic", align_corners=False)
    return up.clamp(-1.0, 1.0)


class SRGAN(PairedTranslation):
    """The SRGAN step: D on real vs upscaled images, then G on content + feature + adversarial.

    The feature loss needs the digit classifier (`use_feature_network`); without one (dry
    runs, image folders) G trains on content and adversarial loss alone.
    """

    grid_divisor = 4  # a quarter as many as a generator grid shows (each takes four cells)

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        return build_generator(c), SRDiscriminator(c.channels, c.ndf, c.image_size)

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.feature_network: DigitClassifier | None = None

    def judged(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return image  # D judges the high-resolution image alone

    @property
    def adversarial_weight(self) -> float:
        return self.config.lambda_adv

    def use_feature_network(self, classifier: DigitClassifier) -> None:
        """Measure G's feature loss in `classifier`'s embedding (frozen, in eval mode)."""
        classifier = classifier.to(self.device).eval()
        for p in classifier.parameters():
            p.requires_grad_(False)
        self.feature_network = classifier

    def feature_loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Mean squared distance of the classifier's features [N, 128] of fake and real images."""
        assert self.feature_network is not None
        embed = self.feature_network.embed
        with torch.no_grad():
            target = embed(to_classifier_input(real))
        return F.mse_loss(embed(to_classifier_input(fake)), target)

    def feature_loss_of(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        if self.feature_network is None or not self.config.lambda_feature:
            return None
        return self.feature_loss(fake, target)

    def grid_images(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # Rows of 8 in fours: low resolution (nearest), bicubic, SRGAN, the real image.
        low, real, scale = inputs["image"], inputs["target"], self.config.scale
        fake = self.sample(inputs)
        rows = []
        for s in range(0, len(low), 8):
            part = low[s : s + 8]
            rows += [nearest(part, scale), bicubic(part, scale), fake[s : s + 8], real[s : s + 8]]
        return torch.cat(rows)
