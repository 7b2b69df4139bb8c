"""A picture of every shipped model, from its ONNX file (`make pictures`).

    .venv/bin/python -m ganserve.export.pictures [--models models] [--out docs/images]

Writes `<out>/<model>.png` for the newest version of each model in the repository:
- a generator: the grid `ganserve grid MODEL --seed 0` gets from a server (the same bytes: the
  latent contract's images through the same ONNX file): one row per class for a conditional
  model, 8 x 8 samples for an unconditional one;
- a translation model (image to image, super-resolution): three rows, source / output /
  target, of the first held-out digit of each class (the held-out digits are never trained on),
  the source scaled up to the output's size.
Needs onnxruntime and, for translation models, the training data (`pip install '.[export]'`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ganserve.export.repository import MODEL_FILE, model_names, versions
from ganserve.grid import grid_labels, tile
from ganserve.latent import latents
from ganserve.png import encode_png

COLUMNS = 8  # a generator's grid: 8 columns, as `ganserve grid` by default
ROWS = 8  # an unconditional one's rows
SCALE = 2  # as `ganserve grid --scale`
SEED = 0


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
    assert held.source is not None  # a translation split has its A side
    source, target = to_uint8(held.source[first]), to_uint8(held.image[first])
    output = session.run(None, {card.inputs[0].name: source})[0]
    scale = output.shape[1] // source.shape[1]
    shown = source.repeat(scale, axis=1).repeat(scale, axis=2)
    return tile(np.concatenate([shown, output, target]), len(first), SCALE)


def picture(path: Path) -> np.ndarray:
    """The picture of the model file at `path` (its kind decides which)."""
    _, card = _session(path)
    return translation_grid(path) if card.kind == "translation" else generator_grid(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models"), help="the model repository")
    p.add_argument("--out", type=Path, default=Path("docs/images"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in model_names(args.models):
        newest = versions(args.models / name)[-1]
        image = picture(args.models / name / str(newest) / MODEL_FILE)
        target = args.out / f"{name}.png"
        target.write_bytes(encode_png(image))
        print(f"{target}: {image.shape[1]}x{image.shape[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
