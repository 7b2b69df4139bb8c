"""DCGAN (Radford, Metz & Chintala 2015, arXiv:1511.06434): unconditional image generation.

Transposed convolutions double the size from 4x4 up to `image_size`, BatchNorm everywhere but
G's output and D's input, ReLU in G, LeakyReLU(0.2) in D, tanh output, N(0, 0.02) weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.config import TrainConfig
from training.data import Split
from training.gan import GAN, StepStats, evaluating


def weights_init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), bias 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 1.0)


def generator_body(nin: int, ngf: int, nc: int, image_size: int) -> nn.Sequential:
    """[N, nin, 1, 1] → [N, nc, image_size, image_size] in [-1, 1]."""
    n_up = int(math.log2(image_size)) - 2  # 4x4 → image_size
    mult = 2 ** (n_up - 1)
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(nin, ngf * mult, 4, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * mult),
        nn.ReLU(True),
    ]  # state size. (ngf*mult) x 4 x 4
    for _ in range(n_up - 1):
        layers += [
            nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * mult // 2),
            nn.ReLU(True),
        ]  # state size. (ngf*mult/2) x 2s x 2s
        mult //= 2
    layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
    # state size. nc x image_size x image_size
    return nn.Sequential(*layers)


def discriminator_body(nc: int, ndf: int, image_size: int) -> nn.Sequential:
    """[N, nc, image_size, image_size] → logits [N, 1, 1, 1]."""
    n_down = int(math.log2(image_size)) - 2  # image_size → 4x4
    layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    # state size. ndf x image_size/2 x image_size/2
    mult = 1
    for _ in range(n_down - 1):
        layers += [
            nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * mult * 2),
            nn.LeakyReLU(0.2, True),
        ]  # state size. (ndf*2mult) x s/2 x s/2
        mult *= 2
    layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False))  # state size. 1 x 1 x 1
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """netG: latent z [N, nz] → image [N, nc, H, W] in [-1, 1]."""

    def __init__(self, nz: int, ngf: int, nc: int, image_size: int) -> None:
        super().__init__()
        self.nz = nz
        self.main = generator_body(nz, ngf, nc, image_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    """netD: image [N, nc, H, W] → real/fake logit [N]."""

    def __init__(self, nc: int, ndf: int, image_size: int) -> None:
        super().__init__()
        self.main = discriminator_body(nc, ndf, image_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main(image).view(-1)


def build_generator(config: TrainConfig) -> Generator:
    """netG for this config (the same call rebuilds it from a checkpoint)."""
    return Generator(config.nz, config.ngf, config.channels, config.image_size)


class DCGAN(GAN):
    """The DCGAN training step: one D update, then one G update, per batch."""

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        return build_generator(c), Discriminator(c.channels, c.ndf, c.image_size)

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.config.nz, generator=generator).to(self.device)

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepStats:
        real = batch["image"].to(self.device)
        n = real.shape[0]
        fake = self.netG(self.latent(n))

        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        self.optimizerD.zero_grad(set_to_none=True)
        output_real = self.netD(real)
        errD_real = self.criterion(output_real, True)
        errD_real.backward()
        output_fake = self.netD(fake.detach())
        errD_fake = self.criterion(output_fake, False)
        errD_fake.backward()
        self.optimizerD.step()

        # (2) Update G network: maximize log(D(G(z))) (the non-saturating loss)
        self.optimizerG.zero_grad(set_to_none=True)
        output = self.netD(fake)
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
        return {"z": self.latent(n, torch.Generator().manual_seed(self.config.seed))}

    @torch.no_grad()
    def sample(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with evaluating(self.generator) as netG:
            return netG(inputs["z"])
