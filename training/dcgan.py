"""DCGAN (Radford, Metz & Chintala 2015, arXiv:1511.06434): unconditional image generation.

Transposed convolutions double the size from 4x4 up to `image_size`, BatchNorm everywhere but
G's output and D's input, ReLU in G, LeakyReLU(0.2) in D, tanh output, N(0, 0.02) weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganserve.training.config import TrainConfig
from ganserve.training.data import Split
from ganserve.training.gan import GAN, StepStats, evaluating, frozen, gradient_penalty


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


def discriminator_body(nc: int, ndf: int, image_size: int, *, norm: str = "batch") -> nn.Sequential:
    """[N, nc, image_size, image_size] → logits [N, 1, 1, 1].

    `norm` "spectral" swaps BatchNorm for spectral normalisation of every conv (Miyato et al.
    2018): a conditional D must judge each (image, label) pair on its own, and BatchNorm lets
    it tell real batches from fake ones by their statistics instead. "none" has neither: the
    WGAN-GP critic, whose gradient penalty is taken per sample.
    """
    spectral, batch_norm = norm == "spectral", norm == "batch"

    def conv(cin: int, cout: int, *args: int) -> nn.Module:
        layer = nn.Conv2d(cin, cout, *args, bias=not batch_norm)
        return nn.utils.parametrizations.spectral_norm(layer) if spectral else layer

    def norm(c: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(c)] if batch_norm else []

    n_down = int(math.log2(image_size)) - 2  # image_size → 4x4
    layers: list[nn.Module] = [conv(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    # state size. ndf x image_size/2 x image_size/2
    mult = 1
    for _ in range(n_down - 1):
        layers += [conv(ndf * mult, ndf * mult * 2, 4, 2, 1), *norm(ndf * mult * 2),
                   nn.LeakyReLU(0.2, True)]  # fmt: skip
        # state size. (ndf*2mult) x s/2 x s/2
        mult *= 2
    layers.append(conv(ndf * mult, 1, 4, 1, 0))  # state size. 1 x 1 x 1
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

    def __init__(self, nc: int, ndf: int, image_size: int, *, norm: str = "batch") -> None:
        super().__init__()
        self.main = discriminator_body(nc, ndf, image_size, norm=norm)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main(image).view(-1)


def build_generator(config: TrainConfig) -> Generator:
    """netG for this config (the same call rebuilds it from a checkpoint)."""
    return Generator(config.nz, config.ngf, config.channels, config.image_size)


class LatentSampling(GAN):
    """What every z -> image family shares: latents from N(0, I), fixed grid inputs, samples
    from the served generator (DCGAN, CGAN with labels added, the VAE's decoder)."""

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.config.nz, generator=generator).to(self.device)

    def random_inputs(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"z": self.latent(n, generator)}

    def fixed_inputs(self, n: int, held: Split) -> dict[str, torch.Tensor]:
        return {"z": self.latent(n, torch.Generator().manual_seed(self.config.seed))}

    @torch.no_grad()
    def sample(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # `fixed_inputs` names netG's arguments: z (and label, for cgan)
        with evaluating(self.served_generator) as netG:
            return netG(**inputs)


class DCGAN(LatentSampling):
    """The DCGAN training step: one D update, then one G update, per batch.

    Conditional families override `conditions` to feed labels to both networks.
    """

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        netD = Discriminator(c.channels, c.ndf, c.image_size, norm=c.d_norm)
        return build_generator(c), netD

    def conditions(self, batch: dict[str, torch.Tensor]) -> tuple[tuple, tuple]:
        """Extra inputs of (netD on real images, netG and netD on fakes); none for DCGAN."""
        return (), ()

    def generator_regulariser(
        self, fake: torch.Tensor, z: torch.Tensor, fake_cond: tuple
    ) -> torch.Tensor | None:
        """An extra term of G's loss, or None: mode seeking (Mao et al. 2019,
        arXiv:1903.05628) when `mode_seeking` is on. The batch's two halves of latents (with the
        same labels, for cgan) must give images as far apart as the latents are: a generator
        that maps many latents to one image (one digit, or one image per class) pays for it."""
        if not self.config.mode_seeking:
            return None
        n = fake.shape[0] // 2
        image_distance = (fake[:n] - fake[n : 2 * n]).abs().mean()
        latent_distance = (z[:n] - z[n : 2 * n]).abs().mean()
        return self.config.mode_seeking / (image_distance / latent_distance + 1e-5)

    def auxiliary_step(self, real: torch.Tensor, real_cond: tuple) -> float | None:
        """An extra network's update on the real batch after D's (cgan's auxiliary
        classifier), returning its loss; DCGAN has none."""
        return None

    def judge(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        real_cond: tuple,
        fake_cond: tuple,
        netD: nn.Module | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`netD`'s (default: self.netD) logits for the real and the fake images.

        With `mixed_batch`, D sees both in one batch, so its BatchNorm statistics cannot tell
        a real batch from a fake one; otherwise, as in the DCGAN paper, one batch of each.
        """
        netD = self.netD if netD is None else netD  # a Sequential with no layers is falsy
        if not self.config.mixed_batch:
            return netD(real, *real_cond), netD(fake, *fake_cond)
        cond = tuple(torch.cat(pair) for pair in zip(real_cond, fake_cond, strict=True))
        output = netD(torch.cat([real, fake]), *cond)
        return output[: len(real)], output[len(real) :]

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepStats:
        real = batch["image"].to(self.device)
        z = self.latent(real.shape[0])
        real_cond, fake_cond = self.conditions(batch)
        generator_due = self.generator_due()  # every n_critic-th step (wgan-gp: 5)
        with torch.set_grad_enabled(generator_due):
            fake = self.netG(z, *fake_cond)

        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        # (wgan-gp: maximize D(x) - D(G(z)) - gp_weight x gradient penalty)
        self.optimizerD.zero_grad(set_to_none=True)
        output_real, output_fake = self.judge(real, fake.detach(), real_cond, fake_cond)
        errD_real = self.criterion(output_real, True)
        errD_fake = self.criterion(output_fake, False)
        errD = errD_real + errD_fake
        penalty = None
        if self.config.loss == "wgan-gp":
            penalty = gradient_penalty(self.netD, real, fake.detach(), *real_cond)
            errD = errD + self.config.gp_weight * penalty
        errD.backward()
        self.optimizerD.step()
        loss_aux = self.auxiliary_step(real, real_cond)

        # (2) Update G network: maximize log(D(G(z))) (the non-saturating loss)
        # (between G updates, wgan-gp reports the last one's loss and D(G(z)))
        if generator_due:
            self.optimizerG.zero_grad(set_to_none=True)
            with frozen(self.discriminator) as netD:
                if self.config.mixed_batch:
                    _, output = self.judge(real, fake, real_cond, fake_cond, netD)
                else:
                    output = netD(fake, *fake_cond)
            errG = self.criterion(output, True)
            regulariser = self.generator_regulariser(fake, z, fake_cond)
            (errG if regulariser is None else errG + regulariser).backward()
            self.step_generator()
            self.last_generator_step = (errG.item(), self.criterion.probability(output))

        loss_G, D_G_z2 = self.last_generator_step
        return StepStats(
            loss_D=errD.item(),
            loss_G=loss_G,
            D_x=self.criterion.probability(output_real),
            D_G_z1=self.criterion.probability(output_fake),
            D_G_z2=D_G_z2,
            gradient_penalty=None if penalty is None else penalty.item(),
            loss_aux=loss_aux,
        )
