"""`ganserve grid MODEL --out grid.png`: a picture of what a served generator makes.

    ganserve grid mnist-cgan --out grid.png              # one row per class, 8 columns
    ganserve grid mnist-cgan --labels 3,8 --columns 12 --seed 7 --out threes-and-eights.png
    ganserve grid mnist-dcgan --rows 8 --columns 8 --out grid.png

A conditional model's row r holds `columns` images of label `labels[r]` (every class by
default); an unconditional model's grid holds rows x columns samples, row by row. Image i of the
call is the latent contract's image i at `--seed`, so the same command gives the same picture,
and `make pictures` draws the same grids from the ONNX files without a server. Each image is
scaled up `--scale` times (nearest neighbour) and set apart by a 2-pixel gap.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ganserve.channels import read_token
from ganserve.client import Client
from ganserve.errors import GanserveError
from ganserve.png import encode_png

GAP = 2  # pixels between images and around the grid
GAP_LEVEL = 255  # the gap's colour: white, so dark digits on black stay apart


def tile(images: np.ndarray, columns: int, scale: int = 1) -> np.ndarray:
    """uint8 [N, H, W, C] → one uint8 image [rows * (H*scale + GAP) + GAP, ..., C], row by row
    (a last row that is not full is left blank)."""
    if images.dtype != np.uint8 or images.ndim != 4 or not len(images):
        raise ValueError(
            f"tile wants uint8 [N, H, W, C] with N >= 1, got {images.dtype}{images.shape}"
        )
    if columns < 1 or scale < 1:
        raise ValueError(f"columns {columns} and scale {scale} must be >= 1")
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = images.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + GAP) + GAP, columns * (w + GAP) + GAP, c), GAP_LEVEL, np.uint8)
    for i, image in enumerate(images):
        top, left = GAP + (i // columns) * (h + GAP), GAP + (i % columns) * (w + GAP)
        out[top : top + h, left : left + w] = image
    return out


def grid_labels(labels: Sequence[int], columns: int) -> np.ndarray:
    """The label of each image of a conditional grid: row r is `columns` x labels[r]."""
    return np.repeat(np.asarray(labels, np.int64), columns)


def _labels(text: str | None, num_classes: int) -> list[int]:
    if text is None:
        return list(range(num_classes))
    try:
        labels = [int(part) for part in text.split(",")]
    except ValueError:
        raise GanserveError(f"--labels {text!r}: comma-separated class numbers") from None
    bad = [label for label in labels if not 0 <= label < num_classes]
    if bad:
        raise GanserveError(f"--labels: {bad} not in 0..{num_classes - 1}")
    return labels


def main(argv: Sequence[str]) -> int:
    """Run `ganserve grid`: status 0 written, 1 the server refused, 2 a usage or setup error."""
    p = argparse.ArgumentParser(
        prog="ganserve grid", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("model")
    p.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    p.add_argument("--server", default="localhost:8500", help="host:port")
    p.add_argument("--version", type=int, default=0, help="default: the newest ready")
    p.add_argument("--rows", type=int, default=8, help="unconditional models (default 8)")
    p.add_argument("--columns", type=int, default=8)
    p.add_argument("--labels", help="conditional models: one row per label, e.g. 0,3,8 (all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling")
    p.add_argument("--tls-ca", type=Path, help="PEM CA of the server's TLS certificate")
    p.add_argument("--token-file", type=Path, help="a file holding the bearer token")
    args = p.parse_args(argv)
    if args.rows < 1 or args.columns < 1 or args.scale < 1:
        p.error("--rows, --columns and --scale must be >= 1")
    try:
        token = read_token(args.token_file)
        client = Client(args.server, tls=args.tls_ca or False, token=token)
    except GanserveError as exc:
        print(f"ganserve grid: {exc}", file=sys.stderr)
        return 2
    with client:
        try:
            info = client.describe_model(args.model, version=args.version)
        except GanserveError as exc:
            print(f"ganserve grid: {exc}", file=sys.stderr)
            return 1
        if info.kind not in ("conditional", "unconditional"):
            print(
                f"ganserve grid: {args.model} is a {info.kind} model: it needs source images "
                "(ganserve translate --input DIR)",
                file=sys.stderr,
            )
            return 2
        try:
            if info.kind == "conditional":
                labels = grid_labels(_labels(args.labels, info.num_classes), args.columns)
            elif args.labels is not None:
                raise GanserveError(f"--labels: {args.model} is unconditional")
        except GanserveError as exc:
            print(f"ganserve grid: {exc}", file=sys.stderr)
            return 2
        try:
            if info.kind == "conditional":
                images = client.generate(
                    args.model, labels=labels, seed=args.seed, version=info.version
                )
            else:
                count = args.rows * args.columns
                images = client.sample(args.model, count, seed=args.seed, version=info.version)
        except GanserveError as exc:
            print(f"ganserve grid: {exc}", file=sys.stderr)
            return 1
    picture = tile(images.pixels, args.columns, args.scale)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(encode_png(picture))
    h, w = picture.shape[:2]
    print(f"{args.out}: {args.model} v{info.version}, {len(images.pixels)} images, {w}x{h}")
    return 0
