"""Output shapes and parameter counts of every family's networks."""

import pytest
import torch

from ganserve.training.cgan import ConditionalDiscriminator, ConditionalGenerator
from ganserve.training.classifier import DigitClassifier
from ganserve.training.config import TrainConfig
from ganserve.training.dcgan import Discriminator, Generator
from ganserve.training.families import build_gan, build_generator
from ganserve.training.pix2pix import NLayerDiscriminator, UnetGenerator
from ganserve.training.srgan import SRDiscriminator, SRResNet


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, bias: bool = False) -> int:
    """Parameters of a 4x4 (transposed) convolution."""
    return cin * cout * 16 + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def test_dcgan_shapes_and_parameters() -> None:
    netG, netD = Generator(nz=100, ngf=64, nc=1, image_size=32), Discriminator(1, 64, 32)
    image = netG(torch.randn(5, 100))
    assert image.shape == (5, 1, 32, 32)
    assert image.min() >= -1 and image.max() <= 1
    assert netD(image).shape == (5,)
    # 100 → 256 @4x4 → 128 @8 → 64 @16 → 1 @32
    assert n_params(netG) == conv(100, 256) + bn(256) + conv(256, 128) + bn(128) + conv(
        128, 64
    ) + bn(64) + conv(64, 1)
    assert n_params(netG) == 1_066_880
    assert n_params(netD) == conv(1, 64) + conv(64, 128) + bn(128) + conv(128, 256) + bn(
        256
    ) + conv(256, 1)


def test_dcgan_64x64_rgb_is_the_standard_generator() -> None:
    netG = Generator(nz=100, ngf=64, nc=3, image_size=64)
    assert netG(torch.randn(2, 100)).shape == (2, 3, 64, 64)
    assert n_params(netG) == 3_576_704  # pytorch/examples dcgan netG
    assert Discriminator(3, 64, 64)(torch.randn(2, 3, 64, 64)).shape == (2,)


def test_cgan_shapes_and_parameters() -> None:
    netG = ConditionalGenerator(nz=100, num_classes=10, ngf=64, nc=1, image_size=32)
    netD = ConditionalDiscriminator(num_classes=10, nc=1, ndf=64, image_size=32, norm="spectral")
    label = torch.tensor([0, 3, 9])
    image = netG(torch.randn(3, 100), label)
    assert image.shape == (3, 1, 32, 32)
    assert netD(image, label).shape == (3,)
    assert n_params(netG) == 10 * 50 + conv(150, 256) + bn(256) + conv(256, 128) + bn(128) + conv(
        128, 64
    ) + bn(64) + conv(64, 1)
    # label embedding 10 x 10 broadcast to 10 planes beside the image; spectral norm, no BN
    assert n_params(netD) == 10 * 10 + conv(11, 64, True) + conv(64, 128, True) + conv(
        128, 256, True
    ) + conv(256, 1, True)
    assert not [m for m in netD.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    batch_norm = ConditionalDiscriminator(num_classes=10, nc=1, ndf=64, image_size=32)
    assert n_params(batch_norm) == 10 * 10 + conv(11, 64) + conv(64, 128) + bn(128) + conv(
        128, 256
    ) + bn(256) + conv(256, 1)


def test_cgan_label_changes_the_image() -> None:
    netG = ConditionalGenerator(nz=8, num_classes=10, ngf=8, nc=1, image_size=16).eval()
    z = torch.randn(1, 8).repeat(2, 1)
    a, b = netG(z, torch.tensor([1, 7]))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("size", [32, 64])
def test_unet_keeps_the_size_at_any_multiple(size: int) -> None:
    netG = UnetGenerator(1, 1, num_downs=5, ngf=32)
    assert netG(torch.randn(2, 1, size, size)).shape == (2, 1, size, size)
    assert netG(torch.randn(2, 1, size, 2 * size)).shape == (2, 1, size, 2 * size)


def test_pix2pix_parameters() -> None:
    netG = UnetGenerator(1, 1, num_downs=5, ngf=32)  # widths 32, 64, 128, 256, 256
    innermost = conv(256, 256) + conv(256, 256) + bn(256)
    level3 = conv(128, 256) + bn(256) + conv(512, 128) + bn(128)
    level2 = conv(64, 128) + bn(128) + conv(256, 64) + bn(64)
    level1 = conv(32, 64) + bn(64) + conv(128, 32) + bn(32)
    outermost = conv(1, 32) + conv(64, 1, bias=True)
    assert n_params(netG) == innermost + level3 + level2 + level1 + outermost
    netD = NLayerDiscriminator(2, ndf=32, n_layers=3)
    assert n_params(netD) == conv(2, 32, True) + conv(32, 64) + bn(64) + conv(64, 128) + bn(
        128
    ) + conv(128, 256) + bn(256) + conv(256, 1, True)
    # 32x32 input: 16, 8, 4, then two stride-1 convs → 2x2 patches
    assert netD(torch.randn(3, 2, 32, 32)).shape == (3, 1, 2, 2)


def test_unet_uses_dropout_only_in_deep_levels() -> None:
    deep = UnetGenerator(3, 3, num_downs=8, ngf=8)  # the paper's 256x256 generator
    shallow = UnetGenerator(1, 1, num_downs=5, ngf=8)
    dropouts = [m for m in deep.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 3  # as in the paper: the three 8ngf levels below the top four
    assert not [m for m in shallow.modules() if isinstance(m, torch.nn.Dropout)]


@pytest.mark.parametrize("family", ["dcgan", "cgan", "pix2pix"])
@pytest.mark.parametrize("d_norm", ["batch", "spectral"])
def test_weights_follow_the_papers_init(family: str, d_norm: str) -> None:
    config = TrainConfig(family=family, ngf=16, ndf=16, d_norm=d_norm)
    gan = build_gan(config, torch.device("cpu"))
    convs = [m for m in gan.netG.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 0.002
    assert isinstance(build_generator(gan.config), type(gan.netG))
    d_convs = [m for m in gan.netD.modules() if isinstance(m, torch.nn.Conv2d)]
    d_weights = torch.cat([m.weight.flatten() for m in d_convs])
    if (
        family != "pix2pix" and d_norm == "spectral"
    ):  # spectral norm divides each weight by its largest singular value
        assert abs(d_weights.std().item() - 0.02) > 0.005
        originals = [m.parametrizations.weight.original.flatten() for m in d_convs]
        assert abs(torch.cat(originals).std().item() - 0.02) < 0.002
    else:
        assert abs(d_weights.std().item() - 0.02) < 0.002


def test_cgan_mode_seeking_punishes_a_generator_that_ignores_z() -> None:
    gan = build_gan(TrainConfig(family="cgan", ngf=8, ndf=8, mode_seeking=1), torch.device("cpu"))
    batch = {"image": torch.zeros(6, 1, 32, 32), "label": torch.arange(6)}
    _, (fake_label,) = gan.conditions(batch)
    assert torch.equal(fake_label[:3], fake_label[3:])  # two halves, one label each pair
    z = torch.randn(6, 100)
    collapsed = torch.ones(6, 1, 32, 32)
    diverse = torch.rand(6, 1, 32, 32)
    cond = (fake_label,)
    assert gan.generator_regulariser(collapsed, z, cond) > 1000 * gan.generator_regulariser(
        diverse, z, cond
    )
    off = build_gan(TrainConfig(family="cgan", ngf=8, ndf=8, mode_seeking=0), torch.device("cpu"))
    assert off.generator_regulariser(diverse, z, cond) is None


def test_dcgan_mode_seeking_punishes_latents_that_give_one_image() -> None:
    z = torch.randn(6, 100)
    collapsed, diverse = torch.ones(6, 1, 32, 32), torch.rand(6, 1, 32, 32)
    gan = build_gan(TrainConfig(family="dcgan", ngf=8, ndf=8, mode_seeking=1), torch.device("cpu"))
    assert gan.generator_regulariser(collapsed, z, ()) > 1000 * gan.generator_regulariser(
        diverse, z, ()
    )
    off = build_gan(TrainConfig(family="dcgan", ngf=8, ndf=8), torch.device("cpu"))
    assert off.generator_regulariser(diverse, z, ()) is None  # off unless asked for


def test_the_auxiliary_classifier_learns_on_real_digits_and_adds_gs_class_term() -> None:
    config = TrainConfig(family="cgan", ngf=8, ndf=8, mode_seeking=0, aux_weight=2.0)
    gan = build_gan(config, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    image = torch.rand(20, 1, 32, 32, generator=g) * 2 - 1
    label = torch.arange(20) % 10
    losses = [gan.auxiliary_step(image, (label,)) for _ in range(200)]
    assert losses[-1] < losses[0] / 2  # it fits the real batch it is shown
    term = gan.generator_regulariser(image, torch.randn(20, 100), (label,))
    wrong = gan.generator_regulariser(image, torch.randn(20, 100), ((label + 1) % 10,))
    assert term is not None and wrong is not None and wrong > 2 * term  # asked-for labels matter
    assert "auxiliary" in gan.state_dict() and "optimizerA" in gan.state_dict()


@pytest.mark.parametrize("family", ["dcgan", "cgan"])
def test_mixed_batch_judges_real_and_fake_in_one_batchnorm_batch(family: str) -> None:
    config = TrainConfig(family=family, ngf=8, ndf=8, mixed_batch=True)
    gan = build_gan(config, torch.device("cpu"))
    real, fake = torch.rand(4, 1, 32, 32) * 2 - 1, torch.zeros(4, 1, 32, 32)
    real_cond, fake_cond = gan.conditions({"image": real, "label": torch.arange(4)})
    seen: list[int] = []
    bn = next(m for m in gan.netD.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    out_real, out_fake = gan.judge(real, fake, real_cond, fake_cond)
    assert out_real.shape == out_fake.shape == (4,)
    assert seen == [8]  # one batch of 4 real + 4 fake
    gan.config = config.replace(mixed_batch=False)
    gan.judge(real, fake, real_cond, fake_cond)
    assert seen == [8, 4, 4]  # the paper's way: one batch of each


@pytest.mark.parametrize("scale", [2, 4])
def test_srresnet_upscales_any_size_by_its_scale(scale: int) -> None:
    netG = SRResNet(nc=1, ngf=8, n_blocks=2, scale=scale)
    for h, w in [(8, 8), (5, 12)]:
        image = netG(torch.randn(3, 1, h, w))
        assert image.shape == (3, 1, h * scale, w * scale)
        assert image.min() >= -1 and image.max() <= 1
    shuffles = [m for m in netG.modules() if isinstance(m, torch.nn.PixelShuffle)]
    assert len(shuffles) == {2: 1, 4: 2}[scale]  # one sub-pixel convolution per factor of 2
    assert not [m for m in netG.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_srgan_discriminator_judges_high_resolution_images() -> None:
    netD = SRDiscriminator(nc=1, ndf=8, image_size=32)
    assert netD(torch.randn(5, 1, 32, 32)).shape == (5,)
    convs = [m for m in netD.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5 and all(hasattr(m, "parametrizations") for m in convs)


def test_srgan_feature_loss_reaches_g_through_the_classifier() -> None:
    config = TrainConfig(family="srgan", ngf=8, ndf=8, residual_blocks=1, lambda_feature=1.0)
    gan = build_gan(config, torch.device("cpu"))
    gan.use_feature_network(DigitClassifier())  # untrained: only the gradient path is tested
    real = torch.rand(4, 1, 32, 32) * 2 - 1
    fake = gan.netG(torch.nn.functional.avg_pool2d(real, 4))
    loss = gan.feature_loss(fake, real)
    loss.backward()
    assert loss.item() > 0 and gan.netG.head[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in gan.feature_network.parameters())  # frozen
    assert gan.feature_loss(real, real).item() == 0
