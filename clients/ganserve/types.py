"""What the SDK returns: plain dataclasses and numpy arrays, no protobuf."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ganserve.png import encode_png
from ganserve.tensor import to_uint8

Labels = Sequence[int] | np.ndarray  # one class per image, as the clients take them


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # READY, LOADING or FAILED
    error: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """A model as the server describes it (`Client.describe_model`)."""

    name: str
    version: int
    kind: str  # unconditional, conditional or translation
    latent_size: int
    num_classes: int
    class_names: tuple[str, ...]
    height: int
    width: int
    channels: int
    size_multiple: int
    max_batch_size: int
    max_images_per_call: int
    execution_provider: str
    versions: tuple[VersionState, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    # translation: output height and width per source pixel (super-resolution: 2 or 4)
    scale: int = 1
    # translation: an inpainting model, called with `inpaint(model, images, masks)`
    masked: bool = False


@dataclass(frozen=True)
class RepositoryModel:
    """One version of a model in the server's repository (`Client.repository_index`)."""

    name: str
    version: int  # 0: the server named no version (a model it knows of but has not loaded)
    state: str  # as the Open Inference Protocol's index says: READY, LOADING, UNAVAILABLE, ...
    reason: str = ""  # why it is not ready, when it is not


@dataclass(frozen=True)
class Images:
    """Generated images: `pixels` uint8 [N, H, W, C] (or float32 in [-1, 1] when asked)."""

    pixels: np.ndarray
    model: str
    version: int
    start_index: int = 0
    labels: np.ndarray | None = None  # int64 [N] for conditional models

    def __len__(self) -> int:
        return len(self.pixels)

    def save_pngs(self, folder: str | Path, prefix: str = "") -> list[Path]:
        """One PNG per image, named `<prefix><index>.png` by the image's index under its seed."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = self.pixels
        if pixels.dtype != np.uint8:
            pixels = to_uint8(pixels)
        paths = []
        for k, image in enumerate(pixels):
            path = folder / f"{prefix}{self.start_index + k:08d}.png"
            path.write_bytes(encode_png(image))
            paths.append(path)
        return paths
