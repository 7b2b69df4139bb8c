"""What every GAN family shares: two networks, two Adam optimisers, a loss, a step, samples."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ganserve.training.config import TrainConfig
from ganserve.training.data import Split


@dataclass(frozen=True)
class StepStats:
    """What one training step reports: the losses, D(x) and D(G(z)) before and after D's update
    (a VAE reports its reconstruction and KL terms instead). Empty fields are left out."""

    loss_D: float | None = None
    loss_G: float | None = None  # None until G's first update (wgan-gp: every n_critic-th)
    D_x: float | None = None
    D_G_z1: float | None = None
    D_G_z2: float | None = None
    loss_L1: float | None = None  # pix2pix, srgan; cyclegan: the cycle's L1
    loss_identity: float | None = None  # cyclegan: the identity L1
    loss_feature: float | None = None  # srgan, with the classifier's feature loss
    gradient_penalty: float | None = None  # wgan-gp only
    loss_aux: float | None = None  # cgan with --aux-weight: the auxiliary classifier's loss
    loss_recon: float | None = None  # vae only: reconstruction (Bernoulli), per image
    loss_kl: float | None = None  # vae only: KL(q(z|x) || N(0, I)), per image

    def as_dict(self) -> dict[str, float]:
        """The non-empty fields, for logs and the progress bar."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def weights_init(module: nn.Module) -> None:
    """DCGAN's initialisation (Radford et al. 2015), which every family uses: conv weights
    N(0, 0.02), BatchNorm weights N(1, 0.02), bias 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        # A spectrally normalised weight is computed from `original`: initialise that.
        weight = (module.parametrizations.weight.original
                  if parametrize.is_parametrized(module, "weight") else module.weight)  # fmt: skip
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 1.0)


class GANLoss(nn.Module):
    """The adversarial loss on D's raw output: 'vanilla' is BCE on logits (the non-saturating
    loss when G's target is "real"), 'lsgan' is least squares (Mao et al. 2017), 'wgan-gp' the
    Wasserstein critic's: -E[D] for "real", E[D] for "fake" (Arjovsky et al. 2017; its
    gradient penalty is `gradient_penalty`)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.loss = nn.BCEWithLogitsLoss() if mode == "vanilla" else nn.MSELoss()

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        if self.mode == "wgan-gp":
            return -prediction.mean() if target_is_real else prediction.mean()
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        return self.loss(prediction, target)

    def probability(self, prediction: torch.Tensor) -> float:
        """Mean 'realness' D assigns: sigmoid of logits for vanilla, the raw score otherwise."""
        return (torch.sigmoid(prediction) if self.mode == "vanilla" else prediction).mean().item()


def gradient_penalty(
    netD: nn.Module, real: torch.Tensor, fake: torch.Tensor, *cond: torch.Tensor
) -> torch.Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2] at random points x_hat between real and fake images
    (Gulrajani et al. 2017, arXiv:1704.00028); a conditional critic is given the real labels."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(netD(mixed, *cond).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


class WeightAverage:
    """An exponential moving average of G's weights (Karras et al. 2018, Yazici et al. 2019):
    what evaluation, sample grids and export use, at no serving cost.

    After each G update `ema = decay_t * ema + (1 - decay_t) * G` with the warm-up
    decay_t = min(decay, (1 + t) / (10 + t)), so a short run is not stuck near the initial
    weights. BatchNorm's running statistics are copied from G as it trains, and re-estimated
    for the averaged weights by `recalibrate` before they are evaluated or saved.
    """

    def __init__(self, netG: nn.Module, decay: float) -> None:
        import copy

        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(netG).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, netG: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, weight in zip(self.model.parameters(), netG.parameters(), strict=True):
            average.lerp_(weight, 1 - decay)
        for average, buffer in zip(self.model.buffers(), netG.buffers(), strict=True):
            average.copy_(buffer)
        self.updates += 1

    @torch.no_grad()
    def recalibrate(self, inputs: Iterator[dict[str, torch.Tensor]]) -> None:
        """Re-estimate BatchNorm's statistics for the averaged weights: a cumulative average
        over the batches `inputs` yields, with train-mode BatchNorm and nothing else changed."""
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
            m.train()
        try:
            for batch in inputs:
                self.model(**batch)
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            self.model.eval()


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
        self.average = WeightAverage(self.netG, config.ema) if config.ema else None
        self.critic_steps = 0  # D updates so far; G updates on every n_critic-th
        # G's loss and D(G(z)) when it last updated: what a step without a G update reports
        self.last_generator_step: tuple[float | None, float | None] = (None, None)

    @property
    def generator(self) -> nn.Module:
        """netG without any DDP wrapper: what trains, and what checkpoints store as netG."""
        return unwrap(self.netG)

    @property
    def served_generator(self) -> nn.Module:
        """What is evaluated, shown and exported: the weight average when `ema` is on."""
        return self.average.model if self.average is not None else self.generator

    def generator_due(self) -> bool:
        """Count one D update; True when G updates after it (every n_critic-th)."""
        self.critic_steps += 1
        return self.critic_steps % self.config.n_critic == 0

    def step_generator(self) -> None:
        """G's optimiser step, then the weight average's."""
        self.optimizerG.step()
        if self.average is not None:
            self.average.update(self.generator)

    def random_inputs(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor] | None:
        """netG's keyword inputs for n random samples, or None where samples need data
        (pix2pix): what BatchNorm statistics of the weight average are re-estimated on."""
        return None

    def finish_average(self, batches: int = 16, size: int = 256) -> None:
        """Re-estimate the weight average's BatchNorm statistics (`WeightAverage.recalibrate`)
        on `batches` random batches from a fixed seed: the global RNG is left alone, so a
        resumed run goes on exactly as a straight one."""
        if self.average is None:
            return
        g = torch.Generator().manual_seed(self.config.seed + 1)
        inputs = [self.random_inputs(size, g) for _ in range(batches)]
        if all(x is not None for x in inputs):
            self.average.recalibrate(iter(inputs))  # type: ignore[arg-type]

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
        """Weights and optimiser state for a checkpoint (and the weight average, `netG_ema`,
        which `checkpoint.load_generator` prefers)."""
        state: dict[str, object] = {
            "netG": self.generator.state_dict(),
            "netD": self.discriminator.state_dict(),
            "optimizerG": self.optimizerG.state_dict(),
            "optimizerD": self.optimizerD.state_dict(),
            "critic_steps": self.critic_steps,
        }
        if self.average is not None:
            state["netG_ema"] = self.average.model.state_dict()
            state["ema_updates"] = self.average.updates
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what `state_dict` saved."""
        self.generator.load_state_dict(state["netG"])
        self.discriminator.load_state_dict(state["netD"])
        self.optimizerG.load_state_dict(state["optimizerG"])
        self.optimizerD.load_state_dict(state["optimizerD"])
        self.critic_steps = int(state.get("critic_steps", 0))  # type: ignore[call-overload]
        if self.average is not None:
            self.average.model.load_state_dict(state.get("netG_ema", state["netG"]))
            self.average.updates = int(state.get("ema_updates", 0))  # type: ignore[call-overload]
