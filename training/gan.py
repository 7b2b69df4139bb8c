"""What every GAN family shares: two networks, two Adam optimisers, a loss, a step, samples."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ganserve.training.config import TrainConfig
from ganserve.training.data import Split


@dataclass(frozen=True)
class StepStats:
    """What one training step reports: the losses, D(x) and D(G(z)) before and after D's update."""

    loss_D: float
    loss_G: float
    D_x: float
    D_G_z1: float
    D_G_z2: float
    loss_L1: float | None = None  # pix2pix, srgan
    loss_feature: float | None = None  # srgan, with the classifier's feature loss

    def as_dict(self) -> dict[str, float]:
        """The non-empty fields, for logs and the progress bar."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class GANLoss(nn.Module):
    """The adversarial loss on D's raw output: 'vanilla' is BCE on logits (the non-saturating
    loss when G's target is "real"), 'lsgan' is least squares (Mao et al. 2017)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.loss = nn.BCEWithLogitsLoss() if mode == "vanilla" else nn.MSELoss()

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        return self.loss(prediction, target)

    def probability(self, prediction: torch.Tensor) -> float:
        """Mean 'realness' D assigns: sigmoid of logits for vanilla, the raw score for lsgan."""
        return (torch.sigmoid(prediction) if self.mode == "vanilla" else prediction).mean().item()


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm running stats, no dropout) inside the block, the old mode after.

    Samples, evaluation and export all use eval mode: an image must not depend on the batch
    it was generated in.
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """`module` with its parameters' gradients off inside the block.

    G's update needs D's gradient with respect to D's input only; skipping D's own weight
    gradients there saves a third of D's backward pass and changes no result (D's gradients
    are reset before its next update). Pass the unwrapped D (`GAN.discriminator`): a DDP
    wrapper would wait for gradients that never come.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper, or the module itself."""
    return getattr(module, "module", module)


class GAN(abc.ABC):
    """A family's networks and update rule. Subclasses build the nets and define one step."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        from ganserve.training.dcgan import weights_init

        self.config = config
        self.device = device
        torch.manual_seed(config.seed)
        netG, netD = self.build()
        netG.apply(weights_init)
        netD.apply(weights_init)
        self.netG: nn.Module = netG.to(device)
        self.netD: nn.Module = netD.to(device)
        betas = (config.beta1, config.beta2)
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=config.lr, betas=betas)
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=config.lr, betas=betas)
        self.criterion = GANLoss(config.loss).to(device)

    @property
    def generator(self) -> nn.Module:
        """netG without any DDP wrapper: what checkpoints store and export reads."""
        return unwrap(self.netG)

    @property
    def discriminator(self) -> nn.Module:
        """netD without any DDP wrapper."""
        return unwrap(self.netD)

    def wrap_ddp(self) -> None:
        """Wrap both networks in DistributedDataParallel (process group already initialised)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.netG = DDP(self.netG, device_ids=ids)
        self.netD = DDP(self.netD, device_ids=ids)

    @abc.abstractmethod
    def build(self) -> tuple[nn.Module, nn.Module]:
        """(netG, netD), freshly constructed."""

    @abc.abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor]) -> StepStats:
        """One D update and one G update on a batch from `data.Split.batches`."""

    @abc.abstractmethod
    def fixed_inputs(self, n: int, held: Split) -> dict[str, torch.Tensor]:
        """The generator inputs drawn once per run, so sample grids are comparable across epochs."""

    @abc.abstractmethod
    def sample(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Generated images in [-1, 1] for `inputs` (netG in eval mode)."""

    def grid_images(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The images a sample grid shows for `fixed_inputs` (pix2pix adds source and target)."""
        return self.sample(inputs)

    def scale_learning_rate(self, factor: float) -> None:
        """Set both optimisers' learning rate to `factor` x the configured one."""
        for optimizer in (self.optimizerG, self.optimizerD):
            for group in optimizer.param_groups:
                group["lr"] = self.config.lr * factor

    def state_dict(self) -> dict[str, object]:
        """Weights and optimiser state for a checkpoint."""
        return {
            "netG": self.generator.state_dict(),
            "netD": self.discriminator.state_dict(),
            "optimizerG": self.optimizerG.state_dict(),
            "optimizerD": self.optimizerD.state_dict(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what `state_dict` saved."""
        self.generator.load_state_dict(state["netG"])
        self.discriminator.load_state_dict(state["netD"])
        self.optimizerG.load_state_dict(state["optimizerG"])
        self.optimizerD.load_state_dict(state["optimizerD"])
