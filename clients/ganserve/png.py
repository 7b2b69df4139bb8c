"""PNG encoding with numpy and zlib alone (the SDK must not need pillow), and the one reading
of a PNG's structure that sizes an image before anything decodes it.

Encoding: 8-bit greyscale or RGB, one IDAT chunk, filter type 0 on every row: simple and
deterministic (the same pixels always give the same bytes), which the bulk job's checksums
rely on.

Reading (`png_header`): the size a decoder will produce is the size of the one IHDR chunk, so
every chunk is walked first and a file is refused unless it is well formed (PNG 1.2, section 5):
the signature; IHDR first, once, 13 bytes, with a valid bit depth and colour type; every chunk
inside the file, its type four ASCII letters, its CRC right; no unknown critical chunk; PLTE
before the image data when the colour type needs it; the IDAT chunks consecutive; IEND last
(bytes after it are ignored, as decoders do). At most `MAX_CHUNKS` chunks: no encoder writes
more, and the walk stays bounded. It reads lengths and checksums, never pixels, so a refused
file costs no more memory than its bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2}  # channels → PNG colour type (greyscale, truecolour)
# PNG 1.2, table 11.1: the bit depths each colour type allows
_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
MAX_CHUNKS = 100_000
_MAX_LENGTH = 2**31 - 1  # a chunk length past this is invalid (PNG 1.2, section 5.3)


class PngError(ValueError):
    """Bytes that are not a well-formed PNG file; the message says what is wrong."""


@dataclass(frozen=True)
class PngHeader:
    """What a PNG's IHDR chunk says: the size and pixel format its decoder will produce."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlaced: bool


def png_header(data: bytes) -> PngHeader:
    """The header of a well-formed PNG file (see the module docstring); PngError otherwise."""
    view = memoryview(data)
    if len(view) < 8 or view[:8] != _SIGNATURE:
        raise PngError("not a PNG file (it must start with the PNG signature)")
    header: PngHeader | None = None
    pos, chunks, seen_idat, idat_ended, palette = 8, 0, False, False, False
    while True:
        if pos + 12 > len(view):
            raise PngError(f"truncated at byte {pos}: it ends before its IEND chunk")
        chunks += 1
        if chunks > MAX_CHUNKS:
            raise PngError(f"more than {MAX_CHUNKS} chunks")
        (length,) = struct.unpack_from(">I", view, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        where = f"chunk {chunks} (byte {pos})"
        if not kind.isascii() or not kind.isalpha():
            raise PngError(f"{where}: type {kind!r} is not four ASCII letters")
        if length > _MAX_LENGTH or pos + 12 + length > len(view):
            raise PngError(f"{where} {kind.decode()}: {length} bytes run past the end of the file")
        body = view[pos + 4 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", view, pos + 8 + length)
        if zlib.crc32(body) & 0xFFFFFFFF != crc:
            raise PngError(f"{where} {kind.decode()}: bad CRC")
        payload = view[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if header is None:
            if kind != b"IHDR":
                raise PngError(f"{where}: the first chunk is {kind.decode()}, not IHDR")
            header = _ihdr(payload)
            continue
        if kind == b"IHDR":
            raise PngError(f"{where}: a second IHDR chunk")
        if kind[0:1].isupper() and kind not in _CRITICAL:
            raise PngError(f"{where}: unknown critical chunk {kind.decode()}")
        if kind == b"PLTE":
            palette = True
        if kind == b"IDAT":
            if idat_ended:
                raise PngError(f"{where}: IDAT chunks must be consecutive")
            if header.colour_type == 3 and not palette:
                raise PngError(f"{where}: a palette image needs PLTE before its IDAT")
            seen_idat = True
        elif seen_idat:
            idat_ended = True
        if kind == b"IEND":
            if not seen_idat:
                raise PngError(f"{where}: IEND before any IDAT chunk (no image data)")
            return header


def _ihdr(payload: memoryview) -> PngHeader:
    if len(payload) != 13:
        raise PngError(f"IHDR of {len(payload)} bytes; it must be 13")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", payload
    )
    if not 1 <= width <= _MAX_LENGTH or not 1 <= height <= _MAX_LENGTH:
        raise PngError(f"IHDR: {width}x{height} pixels; each side 1 to 2^31 - 1")
    if depth not in _BIT_DEPTHS.get(colour, ()):
        raise PngError(f"IHDR: bit depth {depth} with colour type {colour} is not a PNG format")
    if compression or filtering or interlace > 1:
        raise PngError(
            f"IHDR: compression {compression}, filter {filtering}, interlace {interlace}; "
            "PNG defines 0, 0 and 0 or 1"
        )
    return PngHeader(width, height, depth, colour, bool(interlace))


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
