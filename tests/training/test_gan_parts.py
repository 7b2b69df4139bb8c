"""The parts the families share: the gradient penalty, the weight average, the VAE's pieces."""

import torch
from torch import nn

from ganserve.training.gan import WeightAverage, gradient_penalty
from ganserve.training.vae import Decoder, Encoder


class _Linear(nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere, so the penalty is (||w|| - 1)^2 exactly."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) * self.w).sum(1)


def test_gradient_penalty_is_zero_for_a_1_lipschitz_critic_and_grows_past_it() -> None:
    real, fake = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    unit = torch.zeros(16)
    unit[3] = 1.0
    assert gradient_penalty(_Linear(unit), real, fake).item() < 1e-10
    assert abs(gradient_penalty(_Linear(3 * unit), real, fake).item() - 4.0) < 1e-5
    critic = _Linear(3 * unit)
    gradient_penalty(critic, real, fake).backward()  # differentiable in D's weights
    assert critic.w.grad is not None and critic.w.grad[3] > 0


def test_the_weight_average_warms_up_then_follows_g_slowly() -> None:
    netG = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(netG, decay=0.999)
    start = netG[0].weight.detach().clone()
    with torch.no_grad():
        netG[0].weight.add_(1.0)
    average.update(netG)  # decay min(0.999, 1/10): mostly G's new weights
    assert torch.allclose(average.model[0].weight, start + 0.9)
    for _ in range(5000):
        average.update(netG)
    assert torch.allclose(average.model[0].weight, start + 1, atol=1e-4)
    assert not average.model[0].weight.requires_grad


def test_recalibration_sets_batchnorm_statistics_of_the_averaged_weights() -> None:
    netG = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = WeightAverage(netG, decay=0.5)
    g = torch.Generator().manual_seed(0)
    batches = [{"input": torch.randn(64, 3, generator=g) + 2} for _ in range(4)]
    average.recalibrate(iter(batches))
    with torch.no_grad():
        hidden = average.model[0](torch.cat([b["input"] for b in batches]))
    norm = average.model[1]
    assert torch.allclose(norm.running_mean, hidden.mean(0), atol=1e-5)
    assert norm.momentum == 0.1 and not norm.training  # restored


def test_the_vae_decoder_is_a_generator_in_minus_one_to_one_and_the_encoder_a_posterior() -> None:
    decoder, encoder = Decoder(16, 8, 1, 32), Encoder(16, 8, 1, 32)
    z = torch.randn(3, 16)
    image = decoder.eval()(z)
    assert image.shape == (3, 1, 32, 32) and image.abs().max() <= 1
    assert torch.allclose(image, 2 * torch.sigmoid(decoder(z, logits=True)) - 1, atol=1e-6)
    mean, log_var = encoder(image)
    assert mean.shape == log_var.shape == (3, 16)
