"""The project's own digit classifier: the judge of generated digits and its feature space.

Trained on the MNIST train split only (the held-out digits stay unseen), with small random
shifts as augmentation. Its 128-d penultimate activations are the features the Frechet
distance is measured in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ganserve.training import checkpoint, data
from ganserve.training.config import TrainConfig

CLASSIFIER_SIZE = 32  # images are resized to 32x32 grey before classification
FEATURES = 128


class DigitClassifier(nn.Module):
    """A small VGG-style CNN: image [N, 1, 32, 32] in [-1, 1] → logits [N, 10]."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]

        self.body = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2),  # 32 x 16 x 16
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),  # 64 x 8 x 8
            *block(64, 128), nn.MaxPool2d(2),  # 128 x 4 x 4
            nn.Flatten(), nn.Linear(128 * 16, FEATURES), nn.ReLU(True),  # 128
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURES, num_classes))

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, 128] (the Frechet distance's feature space)."""
        return self.body(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(image))


@dataclass(frozen=True)
class ClassifierResult:
    """A trained classifier and its accuracy on the held-out digits; `losses` is the training
    loss of each step (empty when it was loaded)."""

    model: DigitClassifier
    held_out_accuracy: float
    losses: tuple[float, ...] = ()


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """Any [N, C, H, W] in [-1, 1] → [N, 1, 32, 32] grey."""
    if images.shape[1] == 3:
        images = images.mean(1, keepdim=True)
    if images.shape[-1] != CLASSIFIER_SIZE or images.shape[-2] != CLASSIFIER_SIZE:
        images = F.interpolate(
            images, size=(CLASSIFIER_SIZE,) * 2, mode="bilinear", align_corners=False
        )
    return images


def _shift(images: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random translations of grey images by up to `pixels` each way (pad with black, crop)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pixels,) * 4, value=-1.0)[:, 0]  # (N, H+2p, W+2p)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator)
    rows = dy[:, None] + torch.arange(h)  # (N, H)
    cols = dx[:, None] + torch.arange(w)  # (N, W)
    return padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500
) -> float:
    """Share of `images` that `model` labels correctly."""
    return (predict(model, images, batch) == labels).float().mean().item()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Predicted labels [N]."""
    model.eval()
    return torch.cat(
        [
            model(to_classifier_input(images[i : i + batch])).argmax(1)
            for i in range(0, len(images), batch)
        ]
    )


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    train: data.Split,
    loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    desc: str,
    progress: bool,
) -> tuple[float, ...]:
    """The loop both judges train with: `epochs` over `train` in batches shuffled by `seed`,
    one optimiser and one schedule step per batch on `loss_of(batch)`; eval mode after.
    Returns each step's loss."""
    losses: list[float] = []
    bar = tqdm(range(epochs), desc=desc, disable=not progress)
    for epoch in bar:
        model.train()
        for batch in train.batches(batch_size, epoch=epoch, seed=seed):
            loss = loss_of(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return tuple(losses)


def train_classifier(*, epochs: int = 12, seed: int = 0, progress: bool = True) -> ClassifierResult:
    """Train on MNIST's train split; report accuracy on the held-out split. The shipped
    judges/classifier.pt took the 12 epochs; the tests train 2 (tests/training/test_judges.py)."""
    torch.manual_seed(seed)
    config = TrainConfig(family="dcgan", image_size=CLASSIFIER_SIZE)
    train, held = data.mnist(config)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=epochs * train.batches_per_epoch(64)
    )
    gen = torch.Generator().manual_seed(seed)

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(model(_shift(batch["image"], gen)), batch["label"])

    losses = fit(model, optimizer, schedule, train, loss_of, epochs=epochs, batch_size=64,
                 seed=seed, desc="classifier", progress=progress)  # fmt: skip
    return ClassifierResult(model, accuracy(model, held.image, held.label), losses)


def cached(
    path: str | Path,
    key: str,
    build: Callable[[], nn.Module],
    fit: Callable[[], ClassifierResult],
) -> ClassifierResult:
    """The network saved at `path` under `key` (rebuilt by `build`), or, when the file is
    missing, `fit()`'s result, saved there first."""
    path = Path(path)
    if path.is_file():
        state = checkpoint.load(path)
        model = build()
        model.load_state_dict(state[key])
        return ClassifierResult(model.eval(), state["held_out_accuracy"])  # type: ignore[arg-type]
    result = fit()
    checkpoint.save(
        path, {key: result.model.state_dict(), "held_out_accuracy": result.held_out_accuracy}
    )
    return result


def load_or_train(path: str | Path, *, progress: bool = True) -> ClassifierResult:
    """The classifier saved at `path`, training and saving it there first if it is missing."""
    return cached(path, "classifier", DigitClassifier, lambda: train_classifier(progress=progress))
