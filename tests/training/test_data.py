"""Datasets: the MNIST split, edges, image folders and A|B pairs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganserve.training import data
from ganserve.training.config import TrainConfig


def test_mnist_split_is_fixed_disjoint_and_balanced() -> None:
    train, held = data.mnist(TrainConfig(family="dcgan"))
    assert len(train) == 4000 and len(held) == 1000
    assert torch.bincount(held.label).tolist() == [100] * 10
    assert train.image.shape == (4000, 1, 32, 32)
    assert train.image.min() == -1 and train.image.max() == 1
    _, labels = data.load_mnist_digits()
    a, b = data.mnist_split_indices(labels, 100)
    assert not set(a) & set(b) and len(set(a) | set(b)) == 5000
    assert np.array_equal(b, data.mnist_split_indices(labels, 100)[1])


def test_pix2pix_pairs_are_edges_of_the_digit() -> None:
    train, _ = data.mnist(TrainConfig(family="pix2pix"))
    assert train.source is not None and train.source.shape == train.image.shape
    ink = train.image > 0
    edge = train.source > -0.5
    assert edge.any() and (edge & ~ink).any()  # edges lie around strokes, not just on them
    flat = torch.full((1, 1, 8, 8), 0.3)
    assert torch.all(data.edges(flat) == -1)  # no edge in a flat image


def test_batches_split_an_epoch_between_ranks() -> None:
    split, _ = data.fake(TrainConfig(family="dcgan", image_size=8), n=100)
    both = [list(split.batches(10, epoch=0, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    assert len(both[0]) == len(both[1]) == split.batches_per_epoch(10, 2) == 5
    seen = torch.cat([b["image"].flatten(1)[:, 0] for rank in both for b in rank])
    assert len(seen.unique()) == 100


def write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_image_folder_one_class_per_subfolder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        for i in range(10):
            write(tmp_path / name / f"{i}.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    config = TrainConfig(family="cgan", dataset=str(tmp_path), image_size=16, channels=3,
                         batch_size=4)  # fmt: skip
    train, held = data.load(config)
    assert train.class_names == ("cats", "dogs")
    assert len(train) + len(held) == 20 and train.image.shape[1:] == (3, 16, 16)


def test_paired_folder_splits_a_left_b_right(tmp_path: Path) -> None:
    for i in range(8):
        pair = np.zeros((16, 32), np.uint8)
        pair[:, 16:] = 255  # A black, B white
        write(tmp_path / f"{i}.png", pair)
    config = TrainConfig(family="pix2pix", dataset=str(tmp_path), image_size=16, batch_size=2)
    train, _ = data.load(config)
    assert train.source is not None
    assert torch.all(train.source == -1) and torch.all(train.image == 1)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(data.DatasetError, match=r"broken\.png: cannot read image"):
        data.load(TrainConfig(family="dcgan", dataset=str(tmp_path), batch_size=1))


@pytest.mark.parametrize("scale", [2, 4])
def test_srgan_sources_are_the_digits_downsampled(scale: int) -> None:
    train, held = data.mnist(TrainConfig(family="srgan", scale=scale))
    assert train.source is not None and held.source is not None
    assert train.source.shape == (len(train), 1, 32 // scale, 32 // scale)
    # each source pixel is the mean of its scale x scale block of the digit
    block = train.image[0, 0, :scale, scale : 2 * scale].mean()
    assert torch.isclose(train.source[0, 0, 0, 1], block)
    again, _ = data.mnist(TrainConfig(family="srgan", scale=scale))
    assert torch.equal(again.source, train.source)  # deterministic


def test_srgan_image_folder_gets_low_resolution_sources(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        for i in range(10):
            write(tmp_path / name / f"{i}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    config = TrainConfig(family="srgan", dataset=str(tmp_path), channels=3, scale=2, batch_size=4)
    train, held = data.load(config)
    assert train.source is not None and train.source.shape == (len(train), 3, 16, 16)
    assert held.source is not None and train.image.shape[-1] == 32
