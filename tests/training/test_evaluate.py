"""The judge: the classifier, the Frechet distance, and the reports it feeds."""

import numpy as np
import torch

from ganserve.training import data
from ganserve.training.classifier import ClassifierResult
from ganserve.training.config import TrainConfig
from ganserve.training.evaluate import (
    classify,
    evaluate_digits,
    evaluate_super_resolution,
    evaluate_translation,
    frechet_distance,
)
from ganserve.training.judge import JudgeNet
from ganserve.training.srgan import bicubic, nearest


def test_classifier_reaches_97_percent_on_held_out_digits(classifier: ClassifierResult) -> None:
    assert classifier.held_out_accuracy >= 0.97


class _RealDigits(torch.nn.Module):
    """A "generator" that returns training digits: of the asked-for label (cgan), or in the
    training split's order (dcgan)."""

    def __init__(self, train: data.Split) -> None:
        super().__init__()
        self.digits = train
        self.by_label = [torch.nonzero(train.label == d).flatten() for d in range(10)]
        self.calls = 0

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        start, self.calls = self.calls, self.calls + len(z)
        if label is None:
            pick = torch.randperm(len(self.digits), generator=torch.Generator().manual_seed(3))
            return self.digits.image[pick[start : start + len(z)]]
        rows = [self.by_label[int(d)][(start + i) // 10] for i, d in enumerate(label)]
        return self.digits.image[torch.stack(rows)]


def test_the_independent_judge_is_accurate_and_another_network(
    classifier: ClassifierResult, judge: ClassifierResult
) -> None:
    assert judge.held_out_accuracy >= 0.97
    assert isinstance(judge.model, JudgeNet)
    kinds = [{type(m) for m in model.modules()} for model in (classifier.model, judge.model)]
    assert torch.nn.BatchNorm2d in kinds[0] and torch.nn.BatchNorm2d not in kinds[1]
    assert torch.nn.GroupNorm in kinds[1] and torch.nn.GroupNorm not in kinds[0]
    digits = torch.zeros(2, 1, 32, 32)
    assert classifier.model.embed(digits).shape[1] != judge.model.embed(digits).shape[1]


def test_real_digits_clear_the_bars_under_the_independent_judge_and_noise_does_not(
    classifier: ClassifierResult, judge: ClassifierResult
) -> None:
    for family in ("cgan", "dcgan"):
        config = TrainConfig(family=family)
        train, held = data.mnist(config)
        report = evaluate_digits(
            _RealDigits(train), config, classifier.model, train, held, judge=judge.model
        )
        assert report["bars_judged_by"] == "independent judge"
        assert all(report["passes"].values()), (family, report["independent"])
        assert report["independent"]["frechet_ratio"] < 1.5
    config = TrainConfig(family="dcgan")
    train, held = data.mnist(config)

    class Noise(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.rand(len(z), 1, 32, 32) * 2 - 1

    noise = evaluate_digits(Noise(), config, classifier.model, train, held, judge=judge.model)
    assert not any(noise["passes"].values())


def test_frechet_distance_basics() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4))
    assert abs(frechet_distance(a, a)) < 1e-6
    shifted = frechet_distance(a, a + 3.0)
    assert abs(shifted - 4 * 9.0) < 1e-6  # only the means differ: ||3 * 1||^2
    # N(0, I) vs N(0, 4I) in 4-d: trace(I + 4I - 2 * 2I) = 4
    assert (
        abs(frechet_distance(rng.normal(size=(20000, 4)), 2 * rng.normal(size=(20000, 4))) - 4)
        < 0.2
    )


def test_real_digits_rank_far_above_noise(classifier: ClassifierResult) -> None:
    train, held = data.mnist(TrainConfig(family="dcgan"))
    held_features, held_pred = classify(classifier.model, held.image)
    train_features, _ = classify(classifier.model, train.image[::4])  # 1,000, every class
    noise = torch.rand(1000, 1, 32, 32) * 2 - 1
    noise_features, noise_pred = classify(classifier.model, noise)
    real_fd = frechet_distance(train_features, held_features)
    noise_fd = frechet_distance(noise_features, held_features)
    assert noise_fd > 20 * real_fd
    assert np.bincount(held_pred, minlength=10).min() >= 90  # real digits cover every class
    assert np.bincount(noise_pred, minlength=10).max() > 300  # noise collapses onto few labels


def test_translation_scores_the_identity_far_above_a_blank() -> None:
    _, held = data.mnist(TrainConfig(family="pix2pix"))
    perfect = data.Split(held.image, held.label, source=held.image)

    class Blank(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full_like(x, -1.0) + self.w

    identity = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.ones_(identity.weight)
    good, bad = evaluate_translation(identity, perfect), evaluate_translation(Blank(), held)
    assert good["l1"] < 1e-6 and good["psnr_db"] > 90 and good["passes"]["psnr"]
    assert bad["psnr_db"] < 15 and not bad["passes"]["psnr"]


def test_super_resolution_is_judged_against_bicubic(
    classifier: ClassifierResult, judge: ClassifierResult
) -> None:
    config = TrainConfig(family="srgan", scale=4)
    _, held = data.mnist(config)
    assert held.source is not None
    # targets that nearest-neighbour upscaling makes exactly: it is perfect, bicubic is not
    blocky = data.Split(nearest(held.source, 4), held.label, source=held.source)
    perfect = evaluate_super_resolution(
        torch.nn.Upsample(scale_factor=4, mode="nearest"), config, blocky, classifier.model
    )
    assert perfect["psnr_db"] > 90 and perfect["l1"] == 0
    assert perfect["psnr_over_bicubic_db"] > 50 and perfect["passes"]["psnr_over_bicubic_db"]
    assert perfect["accuracy"] == perfect["accuracy_real"]

    class Bicubic(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return bicubic(x, 4)

    same = evaluate_super_resolution(Bicubic(), config, held, classifier.model, judge=judge.model)
    assert same["psnr_over_bicubic_db"] == 0 and same["accuracy_over_bicubic"] == 0
    assert same["passes"] == {"psnr_over_bicubic_db": False, "accuracy_over_bicubic": False}
    assert same["accuracy_real"] > 0.9 and same["accuracy_bicubic"] < same["accuracy_real"]
    # the independent judge reports beside the classifier, and its figures make the bar
    independent = same["independent"]
    assert same["bars_judged_by"] == "independent judge"
    assert independent["accuracy_over_bicubic"] == 0 and independent["accuracy_real"] > 0.9
    assert independent["accuracy_bicubic"] != same["accuracy_bicubic"]  # another network's view
    assert same["psnr_bicubic_db"] == same["psnr_db"] and same["scale"] == 4
