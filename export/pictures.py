"""A picture of every shipped model, from its ONNX file (`make pictures`).

    .venv/bin/python -m ganserve.export.pictures [--models models] [--out docs/images]

Writes `<out>/<model>.png` for the newest version of each model in the repository (and, for a
generator, `<model>-path.png` and `<model>-truncation.png`, the latent space's pictures):
- a generator: the grid `ganserve grid MODEL --seed 0` gets from a server (the same bytes: the
  latent contract's images through the same ONNX file): one row per class for a conditional
  model, 8 x 8 samples for an unconditional one;
- a translation model (image to image, super-resolution, inpainting): three rows, source /
  output / target, of the first held-out digit of each class (the held-out digits are never
  trained on), the source scaled up to the output's size (inpainting: the digit with its fixed
  hole drawn white);
- a generator's paths: PATHS rows of STEPS images along the spherical path from image 2r to
  image 2r + 1 of seed 0 (what `Interpolate` serves for those ends; a conditional model's row r
  shows class PATH_LABELS[r]);
- a generator's truncation grid: one row per threshold of THRESHOLDS (none first), images
  0 .. 9 of seed 0 (a conditional model's balanced: one of each class).
Needs onnxruntime and, for translation models, the training data (`pip install '.[export]'`).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from ganserve.contract import MASK_FILL, balanced_labels
from ganserve.export.repository import MODEL_FILE, model_names, versions
from ganserve.grid import grid_labels, tile
from ganserve.latent import endpoint, latents, path_latents
from ganserve.png import encode_png

COLUMNS = 8  # a generator's grid: 8 columns, as `ganserve grid` by default
ROWS = 8  # an unconditional one's rows
SCALE = 2  # as `ganserve grid --scale`
SEED = 0
PATHS, STEPS, PATH_LABELS = 4, 10, (0, 3, 5, 8)
THRESHOLDS = (0.0, 2.0, 1.0, 0.5)


@functools.cache  # each picture of a model runs the same file: load it once
def _session(path: Path):  # -> (onnxruntime.InferenceSession, ModelCard)
    import onnxruntime as ort

    from ganserve.export.metadata import ModelCard

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, ModelCard.from_props(session.get_modelmeta().custom_metadata_map)


def generator_grid(path: Path) -> np.ndarray:
    """The grid image of the generator at `path`: what `ganserve grid` makes at seed 0."""
    session, card = _session(path)
    (z_spec, *rest) = card.inputs
    if card.kind == "conditional":
        labels = grid_labels(range(card.num_classes), COLUMNS)
        feeds = {z_spec.name: latents(SEED, 0, len(labels), z_spec.shape[1]), rest[0].name: labels}
    else:
        feeds = {z_spec.name: latents(SEED, 0, ROWS * COLUMNS, z_spec.shape[1])}
    return tile(session.run(None, feeds)[0], COLUMNS, SCALE)


def path_ends(row: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (seed, index) ends of the paths picture's row `row`."""
    return (SEED, 2 * row), (SEED, 2 * row + 1)


def path_images(path: Path) -> np.ndarray:
    """uint8 [PATHS * STEPS, H, W, C]: the paths picture's images, row by row."""
    session, card = _session(path)
    (z_spec, *rest) = card.inputs
    nz, rows = z_spec.shape[1], []
    for r in range(PATHS):
        a, b = (endpoint(end, nz) for end in path_ends(r))
        feeds = {z_spec.name: path_latents(a, b, STEPS)}
        if card.kind == "conditional":
            feeds[rest[0].name] = np.full(STEPS, PATH_LABELS[r], np.int64)
        rows.append(session.run(None, feeds)[0])
    return np.concatenate(rows)


def truncation_images(path: Path) -> np.ndarray:
    """uint8 [len(THRESHOLDS) * 10, H, W, C]: images 0 .. 9 of seed 0 at each threshold."""
    session, card = _session(path)
    (z_spec, *rest) = card.inputs
    rows = []
    for t in THRESHOLDS:
        feeds = {z_spec.name: latents(SEED, 0, 10, z_spec.shape[1], truncation=t)}
        if card.kind == "conditional":
            feeds[rest[0].name] = balanced_labels(0, 10, card.num_classes)
        rows.append(session.run(None, feeds)[0])
    return np.concatenate(rows)


def translation_grid(path: Path) -> np.ndarray:
    """Source / output / target rows for the first held-out digit of each class."""
    import torch

    from ganserve.training import data
    from ganserve.training.config import TrainConfig
    from ganserve.training.images import to_uint8

    session, card = _session(path)
    config = TrainConfig.from_dict(card.provenance["config"])
    _, held = data.load(config)
    first = [int(torch.nonzero(held.label == c)[0]) for c in torch.unique(held.label)]
    assert held.source is not None  # a translation split has its A side (inpainting: holes)
    target = to_uint8(held.image[first])
    if card.takes_mask:  # the digit with its hole drawn white, and the filled digit
        mask = held.source[first].numpy().transpose(0, 2, 3, 1).astype(np.uint8) * MASK_FILL
        output = session.run(None, {"image": target, "mask": mask})[0]
        source = np.maximum(target, mask)
    else:
        source = to_uint8(held.source[first])
        output = session.run(None, {card.inputs[0].name: source})[0]
    scale = output.shape[1] // source.shape[1]
    shown = source.repeat(scale, axis=1).repeat(scale, axis=2)
    return tile(np.concatenate([shown, output, target]), len(first), SCALE)


def picture(path: Path) -> np.ndarray:
    """The picture of the model file at `path` (its kind decides which)."""
    _, card = _session(path)
    return translation_grid(path) if card.kind == "translation" else generator_grid(path)


def pictures(path: Path) -> dict[str, np.ndarray]:
    """Every picture of the model file at `path`, by its name's suffix ("" for the model's
    own; "-path" and "-truncation" for a generator's latent space)."""
    drawn = {"": picture(path)}
    if _session(path)[1].kind != "translation":
        drawn["-path"] = tile(path_images(path), STEPS, SCALE)
        drawn["-truncation"] = tile(truncation_images(path), 10, SCALE)
    return drawn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models"), help="the model repository")
    p.add_argument("--out", type=Path, default=Path("docs/images"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in model_names(args.models):
        newest = versions(args.models / name)[-1]
        for suffix, image in pictures(args.models / name / str(newest) / MODEL_FILE).items():
            target = args.out / f"{name}{suffix}.png"
            target.write_bytes(encode_png(image))
            print(f"{target}: {image.shape[1]}x{image.shape[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
