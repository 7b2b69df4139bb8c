"""Conditional GAN (Mirza & Osindero 2014, arXiv:1411.1784) on DCGAN's convolutional bodies.

The class label is fed to both networks through learned embeddings: G sees [z, embed(y)] as
its latent; D sees the image with one extra channel, an H x W plane embedded from y.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import TrainConfig
from training.data import Split
from training.dcgan import discriminator_body, generator_body
from training.gan import GAN, StepStats, evaluating

EMBED_DIM = 50  # size of G's label embedding, concatenated to z


class ConditionalGenerator(nn.Module):
    """netG: (z [N, nz], label int64 [N]) → image [N, nc, H, W] in [-1, 1]."""

    def __init__(self, nz: int, num_classes: int, ngf: int, nc: int, image_size: int) -> None:
        super().__init__()
        self.nz = nz
        self.label_embedding = nn.Embedding(num_classes, EMBED_DIM)
        self.main = generator_body(nz + EMBED_DIM, ngf, nc, image_size)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z, self.label_embedding(label)], dim=1)  # (N, nz + EMBED_DIM)
        return self.main(x.view(x.shape[0], -1, 1, 1))


class ConditionalDiscriminator(nn.Module):
    """netD: (image [N, nc, H, W], label [N]) → real/fake logit [N]."""

    def __init__(self, num_classes: int, nc: int, ndf: int, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.label_embedding = nn.Embedding(num_classes, image_size * image_size)
        self.main = discriminator_body(nc + 1, ndf, image_size)

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        plane = self.label_embedding(label).view(-1, 1, self.image_size, self.image_size)
        return self.main(torch.cat([image, plane], dim=1)).view(-1)  # (N,)


def build_generator(config: TrainConfig) -> ConditionalGenerator:
    """netG for this config (the same call rebuilds it from a checkpoint)."""
    c = config
    return ConditionalGenerator(c.nz, c.num_classes, c.ngf, c.channels, c.image_size)


class CGAN(GAN):
    """The conditional step: D judges (image, label) pairs; G is trained on random labels."""

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        return build_generator(c), ConditionalDiscriminator(
            c.num_classes, c.channels, c.ndf, c.image_size
        )

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepStats:
        real = batch["image"].to(self.device)
        label = batch["label"].to(self.device)
        n = real.shape[0]
        z = torch.randn(n, self.config.nz, device=self.device)
        fake_label = torch.randint(0, self.config.num_classes, (n,), device=self.device)
        fake = self.netG(z, fake_label)

        # (1) Update D network: maximize log(D(x|y)) + log(1 - D(G(z|y')|y'))
        self.optimizerD.zero_grad(set_to_none=True)
        output_real = self.netD(real, label)
        errD_real = self.criterion(output_real, True)
        errD_real.backward()
        output_fake = self.netD(fake.detach(), fake_label)
        errD_fake = self.criterion(output_fake, False)
        errD_fake.backward()
        self.optimizerD.step()

        # (2) Update G network: maximize log(D(G(z|y')|y'))
        self.optimizerG.zero_grad(set_to_none=True)
        output = self.netD(fake, fake_label)
        errG = self.criterion(output, True)
        errG.backward()
        self.optimizerG.step()

        return StepStats(
            loss_D=(errD_real + errD_fake).item(),
            loss_G=errG.item(),
            D_x=self.criterion.probability(output_real),
            D_G_z1=self.criterion.probability(output_fake),
            D_G_z2=self.criterion.probability(output),
        )

    def fixed_inputs(self, n: int, held: Split) -> dict[str, torch.Tensor]:
        # One row per class in the grid: labels 0,0,...,1,1,...
        g = torch.Generator().manual_seed(self.config.seed)
        per_class = max(1, n // self.config.num_classes)
        label = torch.arange(self.config.num_classes).repeat_interleave(per_class)
        z = torch.randn(len(label), self.config.nz, generator=g)
        return {"z": z.to(self.device), "label": label.to(self.device)}

    @torch.no_grad()
    def sample(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with evaluating(self.generator) as netG:
            return netG(inputs["z"], inputs["label"])
