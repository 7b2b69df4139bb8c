"""The value of generated digits, measured the way their users would (issue #24).

- Classification Accuracy Score (CAS; Ravuri & Vinyals, NeurIPS 2019): a classifier trained on
  generated images only (10,000, balanced), tested on the held-out real digits, beside the same
  classifier trained on the real training split (the ceiling), and their ratio.
- Augmentation gain: the same classifier trained on k real digits per class alone, and on the
  same k real plus the generated images, tested on the held-out real digits.

The classifier is `CasNet` trained by `train_classifier` with `ValueRecipe`: fixed, neither of
the project's two judges, and not tuned on the held-out digits (the recipe was chosen on 500 of
the training digits held back from 3,500). Every generated image is used as it comes: none is
filtered or selected by any classifier. The generated images are those the service returns: the
latent contract (`ganserve.latent`) at latent seed s, balanced labels (image i shows class
i mod C), rounded to the served 8-bit levels. Seed s also fixes the classifier's initialisation,
dropout and batch order, and which k digits of each class a few-shot run gets, so the spread over
seeds covers all of these.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganserve.contract import balanced_labels
from ganserve.latent import latents
from ganserve.tensor import to_uint8, to_unit
from ganserve.training.config import TrainConfig
from ganserve.training.data import Split

CAS_SIZE = 32  # images are resized to 32x32 grey before classification
# The targets for the shipped cGAN (issue #24): CAS at least 0.98 of the real-trained
# classifier's accuracy, and 10 real digits per class + generated ones within 0.02 of it.
MIN_CAS_RATIO = 0.98
FEW_SHOT_TARGET = 10
MAX_FEW_SHOT_GAP = 0.02


class CasNet(nn.Module):
    """A LeNet-style CNN, the CAS classifier: image [N, 1, 32, 32] in [-1, 1] → logits [N, C]."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),  # 16 x 16 x 16
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),  # 32 x 8 x 8
            nn.Flatten(), nn.Linear(32 * 8 * 8, 128), nn.ReLU(True),  # 128
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, num_classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


@dataclass(frozen=True)
class ValueRecipe:
    """How the value of generated images is measured: the classifier's training schedule
    (Adam, lr decayed linearly to 0, no augmentation; the same for every training set, so a
    100-digit set and a 10,000-image one get the same number of updates), the seeds, how many
    generated images and which few-shot sizes k."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    generated: int = 10_000
    shots: tuple[int, ...] = (10, 100)
    threads: int = 1  # torch CPU threads while training: deterministic, and bounded

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seeds": list(self.seeds),
            "shots": list(self.shots),
            "optimizer": f"Adam, lr {self.lr:g} decayed linearly to 0, betas (0.9, 0.999)",
            "augmentation": "none",
            "classifier": "CasNet: conv 3x3 16, ReLU, max-pool 2, conv 3x3 32, ReLU, max-pool 2, "
            "fc 128, ReLU, dropout 0.3, fc C (ganserve.training.cas)",
        }


def to_cas_input(images: torch.Tensor) -> torch.Tensor:
    """Any [N, C, H, W] in [-1, 1] → float [N, 1, 32, 32] grey."""
    images = images.float()
    if images.shape[1] == 3:
        images = images.mean(1, keepdim=True)
    if images.shape[-2:] != (CAS_SIZE, CAS_SIZE):
        images = F.interpolate(images, size=(CAS_SIZE,) * 2, mode="bilinear", align_corners=False)
    return images


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches from a stream of shuffled epochs (a set smaller than a batch repeats)."""
    stream = torch.empty(0, dtype=torch.int64)
    while True:
        while len(stream) < batch_size:
            stream = torch.cat([stream, torch.randperm(n, generator=generator)])
        yield stream[:batch_size]
        stream = stream[batch_size:]


class _Threads:
    """torch's intra-op thread count set for a block, then put back."""

    def __init__(self, threads: int) -> None:
        self.threads, self.before = threads, 0

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, recipe: ValueRecipe, seed: int, num_classes: int
) -> CasNet:
    """A CasNet trained on (images [N, C, H, W] in [-1, 1], labels [N]) with `recipe`, seeded
    by `seed`, on `recipe.threads` CPU threads (the global RNG and thread count are left as
    they were)."""
    images, labels = to_cas_input(images), labels.long()
    with torch.random.fork_rng(devices=[]), _Threads(recipe.threads):
        torch.manual_seed(seed)
        net = CasNet(num_classes)
        optimizer = torch.optim.Adam(net.parameters(), lr=recipe.lr)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / recipe.steps)
        order = _batches(len(images), recipe.batch_size, torch.Generator().manual_seed(seed))
        net.train()
        for _, idx in zip(range(recipe.steps), order, strict=False):
            loss = F.cross_entropy(net(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            decay.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, split: Split, batch: int = 500) -> float:
    """Share of `split`'s digits that `net` labels right."""
    net.eval()
    right = 0
    for i in range(0, len(split), batch):
        logits = net(to_cas_input(split.image[i : i + batch]))
        right += int((logits.argmax(1) == split.label[i : i + batch]).sum())
    return right / len(split)


@torch.no_grad()
def served_images(
    netG: nn.Module,
    config: TrainConfig,
    n: int,
    seed: int,
    batch: int = 500,
    truncation: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [n, C, H, W] in [-1, 1], labels [n]): what the service returns for a balanced
    request of n images at `seed` and `truncation` (latent contract, 8-bit levels), none left
    out."""
    netG.eval()
    device = next(netG.parameters(), torch.empty(0)).device
    z = torch.from_numpy(latents(seed, 0, n, config.nz, truncation=truncation))
    labels = torch.from_numpy(balanced_labels(0, n, config.num_classes))
    out = []
    for i in range(0, n, batch):
        fake = netG(z[i : i + batch].to(device), labels[i : i + batch].to(device)).cpu()
        out.append(torch.from_numpy(to_unit(to_uint8(fake.float().numpy()))))
    return torch.cat(out), labels


def few_shot(train: Split, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k training digits of each class (which ones: fixed by `seed`)."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(train.label):
        idx = torch.nonzero(train.label == c).flatten()
        if len(idx) < k:
            raise ValueError(f"few-shot: class {int(c)} has {len(idx)} training digits, not {k}")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    pick = torch.cat(picks)
    return train.image[pick], train.label[pick]


def _summary(values: list[float]) -> dict[str, Any]:
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {
        "mean": round(float(np.mean(values)), 4),
        "std": round(spread, 4),
        "seeds": [round(v, 4) for v in values],
    }


def measure_value(
    netG: nn.Module,
    config: TrainConfig,
    train: Split,
    held: Split,
    recipe: ValueRecipe | None = None,
    truncation: float = 0.0,
) -> dict[str, Any]:
    """CAS and augmentation gain of conditional `netG` (see the module docstring): accuracy on
    `held` of the classifier trained on each set, mean, std and value per seed; the generated
    images at the latents' `truncation` threshold (0: none, as shipped)."""
    recipe = recipe or ValueRecipe()
    started = time.perf_counter()
    runs: dict[str, list[float]] = {"generated": [], "real": []}
    for k in recipe.shots:
        runs[f"real_{k}"], runs[f"real_{k}_plus_generated"] = [], []

    def score(name: str, images: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        net = train_classifier(images, labels, recipe, seed, config.num_classes)
        runs[name].append(accuracy(net, held))

    with _Threads(recipe.threads):  # generating and testing too: the same sums every run
        for seed in recipe.seeds:
            fake, fake_labels = served_images(
                netG, config, recipe.generated, seed, truncation=truncation
            )
            score("generated", fake, fake_labels, seed)
            score("real", train.image, train.label, seed)
            for k in recipe.shots:
                real, real_labels = few_shot(train, k, seed)
                score(f"real_{k}", real, real_labels, seed)
                both = torch.cat([real, fake]), torch.cat([real_labels, fake_labels])
                score(f"real_{k}_plus_generated", *both, seed)
    acc = {name: _summary(values) for name, values in runs.items()}
    real = acc["real"]["mean"]
    ratio = acc["generated"]["mean"] / real
    gain = {
        str(k): round(acc[f"real_{k}_plus_generated"]["mean"] - acc[f"real_{k}"]["mean"], 4)
        for k in recipe.shots
    }
    targets = {"cas_ratio": ratio >= MIN_CAS_RATIO}
    if FEW_SHOT_TARGET in recipe.shots:
        few = acc[f"real_{FEW_SHOT_TARGET}_plus_generated"]["mean"]
        targets[f"real_{FEW_SHOT_TARGET}_plus_generated"] = few >= real - MAX_FEW_SHOT_GAP
    return {
        "recipe": recipe.to_dict(),
        "real_train_digits": len(train),
        "test_digits": len(held),
        "accuracy": acc,
        "cas_ratio": round(ratio, 4),
        "gain": gain,
        "targets": targets,
        "seconds": round(time.perf_counter() - started, 1),
    }


def value_table(value: dict[str, Any]) -> str:
    """The measured block as a Markdown table: accuracy on the held-out real digits."""
    acc, n = value["accuracy"], value["real_train_digits"]
    seeds = len(value["recipe"]["seeds"])

    def cell(name: str) -> str:
        return f"{acc[name]['mean']:.4f} ± {acc[name]['std']:.4f}"

    generated = value["recipe"]["generated"]
    rows = [
        f"| generated only ({generated:,}, balanced): CAS | {cell('generated')} |",
        f"| all {n:,} real training digits (the ceiling) | {cell('real')} |",
        f"| CAS / real | {value['cas_ratio']:.3f} |",
    ]
    for k in value["recipe"]["shots"]:
        rows.append(f"| {k} real per class | {cell(f'real_{k}')} |")
        rows.append(
            f"| {k} real per class + generated | {cell(f'real_{k}_plus_generated')} "
            f"(gain {value['gain'][str(k)]:+.4f}) |"
        )
    head = [
        f"| trained on (tested on {value['test_digits']:,} held-out real digits) | "
        f"accuracy, mean ± std over {seeds} seed{'s' if seeds != 1 else ''} |",
        "|---|---|",
    ]
    targets = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in value["targets"].items())
    return "\n".join([*head, *rows, "", f"targets: {targets}; {value['seconds']:.0f} s"])
