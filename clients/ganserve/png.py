"""PNG encoding with numpy and zlib alone (the SDK must not need pillow).

8-bit greyscale or RGB, one IDAT chunk, filter type 0 on every row: simple and deterministic
(the same pixels always give the same bytes), which the bulk job's checksums rely on.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2}  # channels → PNG colour type (greyscale, truecolour)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png(image: np.ndarray, level: int = 6) -> bytes:
    """One uint8 image [H, W, C] (C = 1 or 3) or [H, W] → PNG file bytes."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in _COLOUR_TYPE:
        raise ValueError(f"encode_png wants uint8 [H, W, 1 or 3], got {image.dtype}{image.shape}")
    h, w, c = image.shape
    rows = np.empty((h, 1 + w * c), np.uint8)
    rows[:, 0] = 0  # filter: none
    rows[:, 1:] = image.reshape(h, w * c)
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOUR_TYPE[c], 0, 0, 0)
    return b"".join(
        [
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            _chunk(b"IEND", b""),
        ]
    )
