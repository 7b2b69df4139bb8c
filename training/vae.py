"""A variational autoencoder (Kingma & Welling 2013, arXiv:1312.6114): the cheap, smooth
generator beside the GANs.

The encoder is DCGAN's discriminator body ending in the posterior's mean and log-variance; the
decoder is DCGAN's generator body, whose last layer gives Bernoulli logits `l` per pixel. The
image is 2 sigmoid(l) - 1 = tanh(l / 2) in [-1, 1], so the decoder drops in wherever a DCGAN
generator goes: it is exported and served as an unconditional `z` -> image model.

The loss is the negative evidence lower bound: the Bernoulli reconstruction loss of the digit's
[0, 1] intensities plus `kl_weight` x KL(q(z|x) || N(0, I)), both summed over an image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.training.config import TrainConfig
from ganserve.training.dcgan import LatentSampling, discriminator_body, generator_body
from ganserve.training.gan import StepStats


class Decoder(nn.Module):
    """netG: latent z [N, nz] → image [N, nc, H, W] in [-1, 1]."""

    def __init__(self, nz: int, ngf: int, nc: int, image_size: int) -> None:
        super().__init__()
        self.nz = nz
        body = generator_body(nz, ngf, nc, image_size)
        self.main = nn.Sequential(*list(body)[:-1])  # without the tanh: logits

    def forward(self, z: torch.Tensor, *, logits: bool = False) -> torch.Tensor:
        """The image, or with `logits` (training) the per-pixel Bernoulli logits."""
        out = self.main(z.view(z.shape[0], self.nz, 1, 1))
        return out if logits else torch.tanh(out / 2)  # = 2 sigmoid(logits) - 1


class Encoder(nn.Module):
    """q(z|x): image [N, nc, H, W] → (mean, log-variance), each [N, nz]."""

    def __init__(self, nz: int, ndf: int, nc: int, image_size: int) -> None:
        super().__init__()
        body = discriminator_body(nc, ndf, image_size)
        mult = body[-1].in_channels  # the 4x4 features' width, before the 1-logit conv
        self.features = nn.Sequential(*list(body)[:-1], nn.Flatten())
        self.posterior = nn.Linear(mult * 4 * 4, 2 * nz)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.posterior(self.features(image)).chunk(2, dim=1)
        return mean, log_var


def build_generator(config: TrainConfig) -> Decoder:
    """The decoder for this config: what a checkpoint's netG weights load into."""
    return Decoder(config.nz, config.ngf, config.channels, config.image_size)


class VAE(LatentSampling):
    """The shared training run's interface with a VAE inside: the decoder takes netG's place
    (checkpoints, evaluation, export and serving read it as netG) and the encoder netD's,
    each with its Adam optimiser; one step updates both on the negative ELBO."""

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        return build_generator(c), Encoder(c.nz, c.ndf, c.channels, c.image_size)

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepStats:
        real = batch["image"].to(self.device)
        n = real.shape[0]
        mean, log_var = self.netD(real)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()  # the reparameterisation
        logits = self.netG(z, logits=True)  # through any DDP wrapper: gradients averaged
        target = (real + 1) / 2
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / n
        kl = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum() / n
        self.optimizerD.zero_grad(set_to_none=True)
        self.optimizerG.zero_grad(set_to_none=True)
        (recon + self.config.kl_weight * kl).backward()
        self.optimizerD.step()
        self.step_generator()
        return StepStats(loss_recon=recon.item(), loss_kl=kl.item())
