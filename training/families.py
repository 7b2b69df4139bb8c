"""The one table from a family's name to its training step and its generator."""

from __future__ import annotations

import torch
from torch import nn

from ganserve.training.cgan import CGAN
from ganserve.training.cgan import build_generator as build_cgan_generator
from ganserve.training.config import TrainConfig
from ganserve.training.cyclegan import CycleGAN
from ganserve.training.cyclegan import build_generator as build_cyclegan_generator
from ganserve.training.dcgan import DCGAN
from ganserve.training.dcgan import build_generator as build_dcgan_generator
from ganserve.training.gan import GAN
from ganserve.training.inpaint import Inpaint
from ganserve.training.inpaint import build_generator as build_inpaint_generator
from ganserve.training.pix2pix import Pix2Pix
from ganserve.training.pix2pix import build_generator as build_pix2pix_generator
from ganserve.training.srgan import SRGAN
from ganserve.training.srgan import build_generator as build_srgan_generator
from ganserve.training.vae import VAE
from ganserve.training.vae import build_generator as build_vae_generator

_GANS: dict[str, type[GAN]] = {
    "dcgan": DCGAN,
    "cgan": CGAN,
    "pix2pix": Pix2Pix,
    "vae": VAE,
    "srgan": SRGAN,
    "inpaint": Inpaint,
    "cyclegan": CycleGAN,
}
_GENERATORS = {
    "dcgan": build_dcgan_generator,
    "cgan": build_cgan_generator,
    "pix2pix": build_pix2pix_generator,
    "vae": build_vae_generator,
    "srgan": build_srgan_generator,
    "inpaint": build_inpaint_generator,
    "cyclegan": build_cyclegan_generator,
}


def build_gan(config: TrainConfig, device: torch.device) -> GAN:
    """Both networks and their optimisers for `config.family`, freshly initialised."""
    return _GANS[config.family](config, device)


def build_generator(config: TrainConfig) -> nn.Module:
    """netG alone (random weights) for `config.family`: what a checkpoint's weights load into."""
    return _GENERATORS[config.family](config)
