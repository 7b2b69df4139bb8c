"""What pix2pix and SRGAN share: paired translation, a source image to its target image.

netG maps a source to a target; netD judges what `judged` makes of (source, image): pix2pix's
PatchGAN the pair stacked channel-wise, SRGAN's D the high-resolution image alone. One step is
D on real vs translated, then G on a content loss (L1 to the target, weighted `lambda_l1`), a
weighted adversarial term and, where a family has one, a feature loss (`lambda_feature`).
Inpainting (`inpaint.py`) changes what a batch gives (`pair`: the image and its mask) and the
content loss (inside the hole only).
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from ganserve.training.config import TrainConfig
from ganserve.training.data import Split
from ganserve.training.gan import GAN, StepStats, evaluating, frozen


class PairedTranslation(GAN):
    """The paired-translation step and sample inputs; a family sets the class attributes and
    `judged` (and may add `feature_loss_of`)."""

    # The order D sees the two batches in: its BatchNorm running statistics (pix2pix) and
    # spectral norm's power iteration (SRGAN) advance per call, so the order is part of the recipe.
    fake_first: bool = False
    d_loss_scale: float = 1.0  # pix2pix halves D's loss to slow D down relative to G
    grid_divisor: int = 2  # `fixed_inputs` draws n // grid_divisor pairs for an n-image grid

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.criterionL1 = nn.L1Loss()

    @abc.abstractmethod
    def judged(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """What netD is shown for a (source, image) pair."""

    @property
    def adversarial_weight(self) -> float:
        """The weight of the adversarial term in G's loss (pix2pix 1, SRGAN `lambda_adv`)."""
        return 1.0

    def feature_loss_of(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """An unweighted feature loss of G (SRGAN's, in a classifier's embedding), or None."""
        return None

    def pair(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
        """(netG's inputs, the source `judged` pairs an image with, the target) of a batch:
        the source image alone by default (inpainting adds its mask)."""
        source = batch["source"].to(self.device)  # [N, C, H, W] (SRGAN: H / scale x W / scale)
        return (source,), source, batch["image"].to(self.device)  # target [N, C, H, W]

    def content_loss(
        self, fake: torch.Tensor, target: torch.Tensor, source: torch.Tensor
    ) -> torch.Tensor:
        """G's content loss before its weight `lambda_l1`: L1 to the target by default."""
        return self.criterionL1(fake, target)

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepStats:
        c = self.config
        inputs, source, target = self.pair(batch)
        fake = self.netG(*inputs)  # [N, C, H, W]

        # (1) Update D: maximize log(D(source, target)) + log(1 - D(source, G(source)))
        self.optimizerD.zero_grad(set_to_none=True)
        real_pair, fake_pair = self.judged(source, target), self.judged(source, fake.detach())
        if self.fake_first:
            pred_fake = self.netD(fake_pair)
            pred_real = self.netD(real_pair)
        else:
            pred_real = self.netD(real_pair)
            pred_fake = self.netD(fake_pair)
        loss_D = self.criterion(pred_real, True) + self.criterion(pred_fake, False)
        loss_D = loss_D * self.d_loss_scale
        loss_D.backward()
        self.optimizerD.step()

        # (2) Update G: stay close to the target (L1, and features), and fool D
        self.optimizerG.zero_grad(set_to_none=True)
        with frozen(self.discriminator) as netD:
            pred = netD(self.judged(source, fake))
        loss_G_GAN = self.criterion(pred, True)
        loss_G_L1 = self.content_loss(fake, target, source)
        loss = c.lambda_l1 * loss_G_L1 + self.adversarial_weight * loss_G_GAN
        loss_feature = self.feature_loss_of(fake, target)
        if loss_feature is not None:
            loss = loss + c.lambda_feature * loss_feature
        loss.backward()
        self.step_generator()  # and the weight average's, with --ema

        return StepStats(
            loss_D=loss_D.item(),
            loss_G=loss_G_GAN.item(),
            D_x=self.criterion.probability(pred_real),
            D_G_z1=self.criterion.probability(pred_fake),
            D_G_z2=self.criterion.probability(pred),
            loss_L1=loss_G_L1.item(),
            loss_feature=None if loss_feature is None else loss_feature.item(),
        )

    def fixed_inputs(self, n: int, held: Split) -> dict[str, torch.Tensor]:
        # Pairs spread over the held-out split, so that every class appears.
        assert held.source is not None
        pick = torch.linspace(0, len(held) - 1, min(n // self.grid_divisor, len(held))).long()
        return {
            "image": held.source[pick].to(self.device),
            "target": held.image[pick].to(self.device),
        }

    @torch.no_grad()
    def sample(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with evaluating(self.served_generator) as netG:
            return netG(inputs["image"])
