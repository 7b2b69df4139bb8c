"""CycleGAN (Zhu, Park, Isola & Efros 2017, arXiv:1703.10593): translation between two image sets
that no pair links (`domains.py`: MNIST digits A, paper-style digits B).

Two generators, G_AB and G_BA (pix2pix's U-Net), and two PatchGAN discriminators, D_A and D_B.
G's loss: the least-squares GAN loss of both directions + lambda_cycle (10) x the cycle L1
(|G_BA(G_AB(a)) - a| + |G_AB(G_BA(b)) - b|) + lambda_identity (0.5) x lambda_cycle x the
identity L1 (|G_AB(b) - b| + |G_BA(a) - a|). Each D sees real images against fakes drawn from a
pool of the last `pool_size` (50) fakes (Shrivastava et al. 2017), its loss halved. netG holds
both generators and is A → B when called (what is exported and served); netD holds both
discriminators. One process only (the step calls the nets' parts, which DDP would not sync).
"""

from __future__ import annotations

import torch
from torch import nn

from ganserve.training.config import TrainConfig
from ganserve.training.data import Split
from ganserve.training.gan import GAN, StepStats, evaluating, frozen
from ganserve.training.pix2pix import NLayerDiscriminator, UnetGenerator

POOL_SEED = 5_050


class CycleGenerators(nn.Module):
    """G_AB (`ab`) and G_BA (`ba`); calling it is G_AB: [N, C, H, W] in [-1, 1] → domain B."""

    def __init__(self, channels: int, depth: int, ngf: int) -> None:
        super().__init__()
        self.ab = UnetGenerator(channels, channels, depth, ngf)
        self.ba = UnetGenerator(channels, channels, depth, ngf)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.ab(image)


class CycleDiscriminators(nn.Module):
    """D_A (`a`, judges domain A) and D_B (`b`)."""

    def __init__(self, channels: int, ndf: int, n_layers: int) -> None:
        super().__init__()
        self.a = NLayerDiscriminator(channels, ndf, n_layers)
        self.b = NLayerDiscriminator(channels, ndf, n_layers)


def build_generator(config: TrainConfig) -> CycleGenerators:
    """netG for this config (the same call rebuilds it from a checkpoint)."""
    return CycleGenerators(config.channels, config.depth, config.ngf)


class ImagePool:
    """The last `size` fakes: half of what D is shown comes from them, so D does not forget
    what G made a while ago. Deterministic for its seed."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.images = size, []
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return fakes
        out = []
        for fake in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(fake.clone())
                out.append(fake)
            elif torch.rand(1, generator=self.rng).item() < 0.5:
                k = int(torch.randint(0, self.size, (1,), generator=self.rng))
                out.append(self.images[k])
                self.images[k] = fake.clone()
            else:
                out.append(fake)
        return torch.stack(out)


class CycleGAN(GAN):
    """The CycleGAN step: both generators on their losses, then both discriminators."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.pool_a = ImagePool(config.pool_size, config.seed * 1000 + POOL_SEED)
        self.pool_b = ImagePool(config.pool_size, config.seed * 1000 + POOL_SEED + 1)
        self.l1 = nn.L1Loss()

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        return build_generator(c), CycleDiscriminators(c.channels, c.ndf, c.n_layers_d)

    def wrap_ddp(self) -> None:
        raise NotImplementedError("cyclegan trains in one process (run it without torchrun)")

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepStats:
        c = self.config
        real_a = batch["source"].to(self.device)  # domain A, unpaired with the B batch
        real_b = batch["image"].to(self.device)
        g, d = self.generator, self.discriminator

        # (1) Both generators: fool both Ds, come back through the cycle, keep what is there
        self.optimizerG.zero_grad(set_to_none=True)
        fake_b, fake_a = g.ab(real_a), g.ba(real_b)
        with frozen(d):
            pred_fake_b, pred_fake_a = d.b(fake_b), d.a(fake_a)
        loss_gan = self.criterion(pred_fake_b, True) + self.criterion(pred_fake_a, True)
        loss_cycle = self.l1(g.ba(fake_b), real_a) + self.l1(g.ab(fake_a), real_b)
        loss = loss_gan + c.lambda_cycle * loss_cycle
        loss_identity = None
        if c.lambda_identity:
            loss_identity = self.l1(g.ab(real_b), real_b) + self.l1(g.ba(real_a), real_a)
            loss = loss + c.lambda_identity * c.lambda_cycle * loss_identity
        loss.backward()
        self.step_generator()

        # (2) Both discriminators: real against fakes from the pools
        self.optimizerD.zero_grad(set_to_none=True)
        pred_real_b, pred_real_a = d.b(real_b), d.a(real_a)
        pooled_b = d.b(self.pool_b.query(fake_b))
        pooled_a = d.a(self.pool_a.query(fake_a))
        crit = self.criterion
        loss_D = 0.5 * (crit(pred_real_b, True) + crit(pooled_b, False))
        loss_D = loss_D + 0.5 * (crit(pred_real_a, True) + crit(pooled_a, False))
        loss_D.backward()
        self.optimizerD.step()

        return StepStats(
            loss_D=loss_D.item(),
            loss_G=loss_gan.item(),
            D_x=self.criterion.probability(pred_real_b),
            D_G_z1=self.criterion.probability(pooled_b),
            D_G_z2=self.criterion.probability(pred_fake_b),
            loss_L1=loss_cycle.item(),
            loss_identity=None if loss_identity is None else loss_identity.item(),
        )

    def fixed_inputs(self, n: int, held: Split) -> dict[str, torch.Tensor]:
        assert held.source is not None
        pick = torch.linspace(0, len(held) - 1, min(n // 2, len(held))).long()
        source, target = held.source[pick], held.image[pick]
        return {"image": source.to(self.device), "target": target.to(self.device)}

    @torch.no_grad()
    def sample(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with evaluating(self.served_generator) as netG:
            return netG(inputs["image"])

    def grid_images(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # Rows of 8 in threes: digits (A), their translations (A → B), their own B renderings.
        source, target = inputs["image"], inputs["target"]
        fake = self.sample(inputs)
        rows = []
        for start in range(0, len(source), 8):
            rows += [source[start : start + 8], fake[start : start + 8], target[start : start + 8]]
        return torch.cat(rows)
