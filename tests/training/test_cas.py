"""The value of generated digits (CAS, augmentation gain): classifier, images and report."""

import numpy as np
import pytest
import torch

from ganserve.contract import balanced_labels
from ganserve.latent import latents
from ganserve.training import data
from ganserve.training.cas import (
    CasNet,
    ValueRecipe,
    accuracy,
    few_shot,
    measure_value,
    served_images,
    train_classifier,
    value_table,
)
from ganserve.training.classifier import ClassifierResult
from ganserve.training.config import TrainConfig
from ganserve.training.evaluate import evaluate_digits
from ganserve.training.judge import JudgeNet

CONFIG = TrainConfig(family="cgan")


@pytest.fixture(scope="module")
def mnist() -> tuple[data.Split, data.Split]:
    return data.mnist(CONFIG)


class _TrainingDigits(torch.nn.Module):
    """A "generator" that draws training digits of the asked-for label; it records its inputs."""

    def __init__(self, train: data.Split) -> None:
        super().__init__()
        self.digits = train
        self.by_label = [torch.nonzero(train.label == d).flatten() for d in range(10)]
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        self.seen.append((z, label))
        rows = [self.by_label[int(d)][i % len(self.by_label[int(d)])] for i, d in enumerate(label)]
        return self.digits.image[torch.stack(rows)] + 0.001  # off the 8-bit levels


def test_the_cas_classifier_learns_digits_and_not_shuffled_labels(
    mnist: tuple[data.Split, data.Split],
) -> None:
    train, held = mnist
    recipe = ValueRecipe(steps=100)
    images, labels = train.image[::4], train.label[::4]  # 1,000, every class
    real = accuracy(train_classifier(images, labels, recipe, 0, 10), held)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    chance = accuracy(train_classifier(images, shuffled, recipe, 0, 10), held)
    assert real > 0.85
    assert chance < 0.25


def test_the_cas_classifier_is_seeded_and_leaves_the_global_rng_alone(
    mnist: tuple[data.Split, data.Split],
) -> None:
    train, _ = mnist
    recipe = ValueRecipe(steps=5, batch_size=16)
    images, labels = train.image[:100], train.label[:100]
    state = torch.get_rng_state()
    nets = [train_classifier(images, labels, recipe, seed, 10) for seed in (3, 3, 4)]
    assert torch.equal(state, torch.get_rng_state())
    weights = [torch.cat([p.flatten() for p in net.parameters()]) for net in nets]
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_the_cas_classifier_is_neither_judge(
    classifier: ClassifierResult, judge: ClassifierResult
) -> None:
    net = CasNet()
    assert not isinstance(net, type(classifier.model)) and not isinstance(net, JudgeNet)
    assert sum(p.numel() for p in net.parameters()) < 0.5e6


def test_served_images_follow_the_latent_contract_balanced_at_8_bits(
    mnist: tuple[data.Split, data.Split],
) -> None:
    netG = _TrainingDigits(mnist[0])
    images, labels = served_images(netG, CONFIG, 30, seed=7, batch=20)
    assert torch.equal(labels, torch.from_numpy(balanced_labels(0, 30, 10)))
    assert np.array_equal(torch.cat([z for z, _ in netG.seen]).numpy(), latents(7, 0, 30, 100))
    levels = (images + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # the served uint8 levels
    assert images.shape == (30, 1, 32, 32)
    netG.seen.clear()
    served_images(netG, CONFIG, 30, seed=7, batch=20, truncation=0.5)  # a truncated request's
    seen = torch.cat([z for z, _ in netG.seen]).numpy()
    assert np.array_equal(seen, latents(7, 0, 30, 100, truncation=0.5)) and abs(seen).max() <= 0.5


def test_few_shot_takes_k_of_each_class_chosen_by_the_seed(
    mnist: tuple[data.Split, data.Split],
) -> None:
    train, _ = mnist
    _, labels = few_shot(train, 10, seed=0)
    assert np.bincount(labels.numpy(), minlength=10).tolist() == [10] * 10
    assert torch.equal(few_shot(train, 10, 0)[0], few_shot(train, 10, 0)[0])
    assert not torch.equal(few_shot(train, 10, 0)[0], few_shot(train, 10, 1)[0])
    with pytest.raises(ValueError, match="few-shot"):
        few_shot(train, 10_000, 0)


def test_the_value_report_of_a_conditional_generator(
    mnist: tuple[data.Split, data.Split], classifier: ClassifierResult
) -> None:
    train, held = mnist
    recipe = ValueRecipe(steps=20, seeds=(0, 1), generated=200, shots=(10,))
    netG = _TrainingDigits(train)
    report = evaluate_digits(netG, CONFIG, classifier.model, train, held, n=100, value=recipe)
    value = report["value"]
    accuracies = value["accuracy"]
    assert set(accuracies) == {"generated", "real", "real_10", "real_10_plus_generated"}
    for figures in accuracies.values():
        assert len(figures["seeds"]) == 2
        assert figures["mean"] == pytest.approx(np.mean(figures["seeds"]), abs=1e-4)
        assert figures["std"] == pytest.approx(np.std(figures["seeds"], ddof=1), abs=1e-4)
    assert value["cas_ratio"] == pytest.approx(
        accuracies["generated"]["mean"] / accuracies["real"]["mean"], abs=1e-3
    )
    gain = accuracies["real_10_plus_generated"]["mean"] - accuracies["real_10"]["mean"]
    assert value["gain"]["10"] == pytest.approx(gain, abs=1e-3)
    assert set(value["targets"]) == {"cas_ratio", "real_10_plus_generated"}
    assert value["recipe"]["steps"] == 20 and value["recipe"]["augmentation"] == "none"
    assert (value["real_train_digits"], value["test_digits"]) == (len(train), len(held))
    table = value_table(value)
    assert "CAS / real" in table and "10 real per class + generated" in table
    # an unconditional generator's report has no value block
    dcgan = TrainConfig(family="dcgan")

    class Noise(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.rand(len(z), 1, 32, 32) * 2 - 1

    unconditional = evaluate_digits(
        Noise(), dcgan, classifier.model, train, held, n=100, value=recipe
    )
    assert "value" not in unconditional


def test_measure_value_restores_torch_threads(mnist: tuple[data.Split, data.Split]) -> None:
    train, held = mnist
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        recipe = ValueRecipe(steps=1, seeds=(0,), generated=20, shots=(1,), threads=1)
        value = measure_value(_TrainingDigits(train), CONFIG, train, held, recipe)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert "real_10_plus_generated" not in value["targets"]  # k = 10 not measured
