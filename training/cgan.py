"""Conditional GAN (Mirza & Osindero 2014, arXiv:1411.1784) on DCGAN's convolutional bodies.

The class label is fed to both networks through learned embeddings: G sees [z, embed(y)] as
its latent; D sees the image with num_classes extra channels, constant planes embedded from y.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.training.config import TrainConfig
from ganserve.training.data import Split
from ganserve.training.dcgan import DCGAN, discriminator_body, generator_body
from ganserve.training.gan import frozen, weights_init

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
        self, num_classes: int, nc: int, ndf: int, image_size: int, *, norm: str = "batch"
    ) -> None:
        super().__init__()
        self.label_embedding = nn.Embedding(num_classes, num_classes)
        self.main = discriminator_body(nc + num_classes, ndf, image_size, norm=norm)

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        n, _, h, w = image.shape
        planes = self.label_embedding(label)[:, :, None, None].expand(n, -1, h, w)
        return self.main(torch.cat([image, planes], dim=1)).view(-1)  # (N,)


class AuxiliaryClassifier(nn.Module):
    """An image's class logits [N, num_classes], learnt on the real batches alone: DCGAN's
    discriminator body without normalisation, its last layer giving one logit per class.

    With `aux_weight`, G's loss adds the cross-entropy of its samples against the labels they
    were asked for (the auxiliary-classifier GAN's term, Odena et al. 2017, arXiv:1610.09585;
    this classifier is not told which images are fake). It pushes G to draw the asked-for digit
    unmistakably; it is the GAN's own network, trained on the training split, and neither of
    the evaluation's judges.
    """

    def __init__(self, num_classes: int, nc: int, ndf: int, image_size: int) -> None:
        super().__init__()
        body = discriminator_body(nc, ndf, image_size, norm="none")
        last = body[-1]
        body[-1] = nn.Conv2d(last.in_channels, num_classes, 4, 1, 0)
        self.main = body

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main(image).flatten(1)


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
            c.num_classes, c.channels, c.ndf, c.image_size, norm=c.d_norm
        )
        return build_generator(c), netD

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.auxiliary: AuxiliaryClassifier | None = None
        if config.aux_weight:
            c = config
            self.auxiliary = AuxiliaryClassifier(c.num_classes, c.channels, c.ndf, c.image_size)
            self.auxiliary.apply(weights_init)
            self.auxiliary.to(device)
            self.optimizerA = torch.optim.Adam(
                self.auxiliary.parameters(), lr=c.lr, betas=(c.beta1, c.beta2)
            )

    def auxiliary_step(self, real: torch.Tensor, real_cond: tuple) -> float | None:
        if self.auxiliary is None:
            return None
        self.optimizerA.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.auxiliary(real), real_cond[0])
        loss.backward()
        self.optimizerA.step()
        return loss.item()

    def state_dict(self) -> dict[str, object]:
        state = super().state_dict()
        if self.auxiliary is not None:
            state["auxiliary"] = self.auxiliary.state_dict()
            state["optimizerA"] = self.optimizerA.state_dict()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        if self.auxiliary is not None:
            self.auxiliary.load_state_dict(state["auxiliary"])
            self.optimizerA.load_state_dict(state["optimizerA"])

    def conditions(self, batch: dict[str, torch.Tensor]) -> tuple[tuple, tuple]:
        label = batch["label"].to(self.device)
        # Fakes come in two halves with the same labels, for the mode-seeking term.
        half = torch.randint(0, self.config.num_classes, ((len(label) + 1) // 2,))
        fake_label = half.repeat(2)[: len(label)].to(self.device)
        return (label,), (fake_label,)

    def generator_regulariser(
        self, fake: torch.Tensor, z: torch.Tensor, fake_cond: tuple
    ) -> torch.Tensor | None:
        """DCGAN's mode seeking (without it G learned to ignore z: one image per class) and,
        with `aux_weight`, the auxiliary classifier's cross-entropy on the asked-for labels."""
        term = super().generator_regulariser(fake, z, fake_cond)
        if self.auxiliary is None:
            return term
        with frozen(self.auxiliary) as auxiliary:
            logits = auxiliary(fake)
        aux = self.config.aux_weight * F.cross_entropy(logits, fake_cond[0])
        return aux if term is None else term + aux

    def random_inputs(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        label = torch.randint(0, self.config.num_classes, (n,), generator=generator)
        return {"z": self.latent(n, generator), "label": label.to(self.device)}

    def fixed_inputs(self, n: int, held: Split) -> dict[str, torch.Tensor]:
        # One grid row per class: labels 0 x 8, 1 x 8, ...
        g = torch.Generator().manual_seed(self.config.seed)
        per_class = 8  # the grid is 8 wide
        label = torch.arange(self.config.num_classes).repeat_interleave(per_class)
        z = torch.randn(len(label), self.config.nz, generator=g)
        return {"z": z.to(self.device), "label": label.to(self.device)}
