"""The independent judge: a second digit classifier that no training run and no tuning sees.

The project's classifier (`classifier.py`) is what the family defaults were tuned against, so
its verdicts flatter. This one differs in everything but the task, so that a generator cannot
have learned its quirks:

- architecture: a residual network with GroupNorm and global average pooling (the project's is
  a VGG-style stack with BatchNorm and a dense layer), 96-d features;
- preprocessing: it sees the 28x28 centre (MNIST's own frame, the 2-pixel pad cut off),
  standardised with MNIST's mean and deviation, instead of the padded 32x32 in [-1, 1];
- augmentation: random rotations (up to 15 degrees), scaling (0.85-1.15), shifts (2 px) and
  stroke thickening or thinning, where the project's only shifts;
- seed and optimiser: seed 7, SGD with Nesterov momentum and cosine decay.

It trains on the train split (the held-out digits' complement), as the held-out digits are
what generated ones are compared with. It is shipped as `judges/judge.pt`, beside the
project classifier; `python -m ganserve.training classifier --out DIR/classifier.pt` trains
both anew (judges/README.md says why evaluation uses the shipped ones).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.training import data
from ganserve.training.classifier import CLASSIFIER_SIZE, ClassifierResult, accuracy, cached, fit
from ganserve.training.config import TrainConfig

JUDGE_SEED = 7
JUDGE_FEATURES = 96
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of 28x28 MNIST pixels in [0, 1]


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.GroupNorm(8, cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.GroupNorm(8, cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(8, cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.body(x) + self.skip(x))


class JudgeNet(nn.Module):
    """image [N, 1, 32, 32] in [-1, 1] → logits [N, 10]; `embed` gives the 96-d features.

    The same `embed`/`head` interface as `DigitClassifier`, so `evaluate.classify` takes both.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 5, 1, 2, bias=False), nn.GroupNorm(8, 32), nn.SiLU(),  # 28
            _Residual(32, 48, 2),  # 14
            _Residual(48, 64, 2),  # 7
            _Residual(64, JUDGE_FEATURES, 2),  # 4
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(JUDGE_FEATURES, num_classes)

    @staticmethod
    def preprocess(image: torch.Tensor) -> torch.Tensor:
        """[-1, 1] at 32x32 → the 28x28 centre, standardised like MNIST's usual pipeline."""
        pad = (CLASSIFIER_SIZE - 28) // 2
        centre = image[:, :, pad : pad + 28, pad : pad + 28]
        return ((centre + 1) / 2 - MNIST_MEAN) / MNIST_STD

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """Features [N, 96] (the independent Frechet distance's feature space)."""
        return self.body(self.preprocess(image))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(image))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, scale, shift and stroke width of [-1, 1] digits [N, 1, H, W]."""
    n, _, h, _ = images.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(15)
    scale = 0.85 + torch.rand(n, generator=generator) * 0.3
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 2 / h)  # 2 px, in [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images + 1, grid, align_corners=False, padding_mode="zeros") - 1
    # a third thicker (3x3 max), a third thinner (3x3 min), a third as they are
    stroke = torch.randint(0, 3, (n,), generator=generator)
    thick = F.max_pool2d(out, 3, 1, 1)
    thin = -F.max_pool2d(-out, 3, 1, 1)
    pick = stroke.view(n, 1, 1, 1)
    return torch.where(pick == 1, thick, torch.where(pick == 2, thin, out))


def train_judge(*, epochs: int = 10, progress: bool = True) -> ClassifierResult:
    """Train on MNIST's train split with augmentation; report held-out accuracy. The shipped
    judges/judge.pt took the 10 epochs; the tests train 2 (tests/training/test_judges.py)."""
    torch.manual_seed(JUDGE_SEED)
    train, held = data.mnist(TrainConfig(family="dcgan", image_size=CLASSIFIER_SIZE))
    model = JudgeNet()
    steps = epochs * train.batches_per_epoch(128)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    gen = torch.Generator().manual_seed(JUDGE_SEED)

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(augment(batch["image"], gen))
        return F.cross_entropy(logits, batch["label"], label_smoothing=0.1)

    losses = fit(model, optimizer, schedule, train, loss_of, epochs=epochs, batch_size=128,
                 seed=JUDGE_SEED, desc="judge", progress=progress)  # fmt: skip
    held_out = accuracy(model, held.image, held.label)
    return ClassifierResult(model, held_out, losses)  # type: ignore[arg-type]


def beside(classifier_path: str | Path) -> Path:
    """Where the judge lives: `judge.pt` in the project classifier's folder."""
    return Path(classifier_path).with_name("judge.pt")


def load_or_train_judge(path: str | Path, *, progress: bool = True) -> ClassifierResult:
    """The judge saved at `path`, training and saving it there first if it is missing."""
    return cached(path, "judge", JudgeNet, lambda: train_judge(progress=progress))


def judges_for(
    config: TrainConfig, classifier_path: str | Path, *, progress: bool = True
) -> tuple[nn.Module | None, nn.Module | None]:
    """(the project classifier, the independent judge) that `config`'s evaluation needs, each
    loaded or trained on first use: both for digit generators, srgan and inpaint on MNIST
    (whose upscaled or filled digits both classify), neither otherwise."""
    from ganserve.training.classifier import load_or_train

    if config.dataset != "mnist" or config.family == "pix2pix":
        return None, None
    classifier = load_or_train(classifier_path, progress=progress).model
    return classifier, load_or_train_judge(beside(classifier_path), progress=progress).model
