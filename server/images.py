"""Pixels in and out of a call: PNGs sized, checked and decoded; generator output as pixels.

Every function here is CPU work of one call; the request layer runs the PNG ones on its pool,
never on the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from ganserve.export.metadata import ModelCard
from ganserve.png import PngError, encode_png, png_header
from ganserve.server.errors import InvalidRequest
from ganserve.tensor import to_uint8, to_unit


def decode_pngs(
    pngs: list[bytes], channels: int, check: Callable[[int, int, int], None], field: str = "png"
) -> np.ndarray:
    """Size a call's PNGs from their structure (`ganserve.png.png_header`: every chunk walked,
    one IHDR), `check` that size (count, height, width), and only then decode them into uint8
    [N, H, W, `channels`]. A refused call decodes nothing. Errors name `field` (the request's
    field of PNGs)."""
    from PIL import Image

    sizes = []
    for i, data in enumerate(pngs):
        try:
            header = png_header(data)
        except PngError as exc:
            raise InvalidRequest(f"{field}[{i}]: {exc}") from None
        sizes.append((header.width, header.height))
    if len(set(sizes)) > 1:
        raise InvalidRequest(f"{field}: all images of one call must have the same size")
    w, h = sizes[0]
    check(len(sizes), h, w)
    images = []
    for i, data in enumerate(pngs):
        try:
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                if image.size != (w, h):  # the decoder must make the size that was checked
                    raise InvalidRequest(
                        f"{field}[{i}]: decodes to {image.size}, its header says {(w, h)}"
                    )
                image = image.convert("L" if channels == 1 else "RGB")
                array = np.asarray(image, np.uint8)
        except InvalidRequest:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # Pillow reports a broken file as SyntaxError ("broken PNG file"), others as OSError
            raise InvalidRequest(f"{field}[{i}]: not a readable PNG ({exc})") from None
        images.append(array.reshape(*array.shape[:2], channels))
    return np.stack(images)


def encode_pngs(images: np.ndarray) -> list[bytes]:
    """uint8 [N, H, W, C] as N PNG files."""
    return [encode_png(image) for image in images]


def pixels(card: ModelCard, out: np.ndarray) -> np.ndarray:
    """Generator output (uint8 NHWC from a uint8 head, else float NCHW in [-1, 1]) as uint8
    NHWC pixels."""
    return out if card.uint8_output else to_uint8(out.transpose(0, 2, 3, 1))


def float_pixels(card: ModelCard, out: np.ndarray) -> np.ndarray:
    """Generator output as float32 NHWC in the generator's range [-1, 1]."""
    return to_unit(out) if card.uint8_output else out.transpose(0, 2, 3, 1)


def mask_input(card: ModelCard, mask: np.ndarray) -> np.ndarray:
    """A checked mask (uint8 [N, H, W, 1], 0 keep, nonzero fill) as the graph's `mask` input."""
    if card.input("mask").dtype == "uint8":
        return mask
    return np.ascontiguousarray((mask > 0).transpose(0, 3, 1, 2), np.float32)


def model_input(card: ModelCard, images: np.ndarray) -> np.ndarray:
    """Source pixels (uint8 NHWC) as the translation graph's `image` input."""
    if card.input("image").dtype == "uint8":
        return images
    return np.ascontiguousarray(to_unit(images.transpose(0, 3, 1, 2)))
