"""Conditional GAN (Mirza & Osindero 2014, arXiv:1411.1784) on DCGAN's convolutional bodies.

The class label is fed to both networks through learned embeddings: G sees [z, embed(y)] as
its latent; D sees the image with num_classes extra channels, constant planes embedded from y.
"""

from __future__ import annotations

import torch
from torch import nn

from ganserve.training.config import TrainConfig
from ganserve.training.data import Split
from ganserve.training.dcgan import DCGAN, discriminator_body, generator_body

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
    """netD: (image [N, nc, H, W], label [N]) → real/fake logit [N].

    The label's embedding is broadcast to constant H x W planes beside the image channels:
    a learned per-class bias of D's first layer. (A plane of per-pixel embedded values, tried
    first, let G collapse to one image per class.)
    """

    def __init__(
        self, num_classes: int, nc: int, ndf: int, image_size: int, *, spectral: bool = False
    ) -> None:
        super().__init__()
        self.label_embedding = nn.Embedding(num_classes, num_classes)
        self.main = discriminator_body(nc + num_classes, ndf, image_size, spectral=spectral)

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        n, _, h, w = image.shape
        planes = self.label_embedding(label)[:, :, None, None].expand(n, -1, h, w)
        return self.main(torch.cat([image, planes], dim=1)).view(-1)  # (N,)


def build_generator(config: TrainConfig) -> ConditionalGenerator:
    """netG for this config (the same call rebuilds it from a checkpoint)."""
    c = config
    return ConditionalGenerator(c.nz, c.num_classes, c.ngf, c.channels, c.image_size)


class CGAN(DCGAN):
    """DCGAN's step with labels: D judges (image, label) pairs; G is trained on random labels.

    Its objective: maximize log(D(x|y)) + log(1 - D(G(z|y')|y')) for D, log(D(G(z|y')|y')) for G.
    """

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        netD = ConditionalDiscriminator(
            c.num_classes, c.channels, c.ndf, c.image_size, spectral=c.d_norm == "spectral"
        )
        return build_generator(c), netD

    def conditions(self, batch: dict[str, torch.Tensor]) -> tuple[tuple, tuple]:
        label = batch["label"].to(self.device)
        # Fakes come in two halves with the same labels, for the mode-seeking term.
        half = torch.randint(0, self.config.num_classes, ((len(label) + 1) // 2,))
        fake_label = half.repeat(2)[: len(label)].to(self.device)
        return (label,), (fake_label,)

    def generator_regulariser(self, fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        """Mode seeking (Mao et al. 2019, arXiv:1903.05628): two latents with one label must give
        two different images. Without it G learned to ignore z: one image per class."""
        if self.config.mode_seeking == 0:
            return None
        n = fake.shape[0] // 2
        image_distance = (fake[:n] - fake[n : 2 * n]).abs().mean()
        latent_distance = (z[:n] - z[n : 2 * n]).abs().mean()
        return self.config.mode_seeking / (image_distance / latent_distance + 1e-5)

    def fixed_inputs(self, n: int, held: Split) -> dict[str, torch.Tensor]:
        # One grid row per class: labels 0 x 8, 1 x 8, ...
        g = torch.Generator().manual_seed(self.config.seed)
        per_class = 8  # the grid is 8 wide
        label = torch.arange(self.config.num_classes).repeat_interleave(per_class)
        z = torch.randn(len(label), self.config.nz, generator=g)
        return {"z": z.to(self.device), "label": label.to(self.device)}
