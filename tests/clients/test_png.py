"""The SDK's PNG encoding and the one reading of a PNG's structure (server and SDK share it)."""

from __future__ import annotations

import numpy as np
import pytest

from ganserve.png import PngError, PngHeader, encode_png, png_header


@pytest.mark.parametrize(("channels", "colour_type"), [(1, 0), (3, 2)])
def test_an_encoded_png_reads_back_its_header(channels: int, colour_type: int) -> None:
    png = encode_png(np.zeros((5, 7, channels), np.uint8))
    assert png_header(png) == PngHeader(7, 5, 8, colour_type, False)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"GIF89a", "PNG signature"),
        (b"\x89PNG\r\n\x1a\n", "ends before its IEND"),
        (b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffIHDR" + bytes(8), "run past the end"),
    ],
)
def test_what_is_not_a_png_says_why(data: bytes, words: str) -> None:
    with pytest.raises(PngError, match=words):
        png_header(data)


def test_a_bit_depth_png_does_not_define_is_refused() -> None:
    png = bytearray(encode_png(np.zeros((2, 2, 3), np.uint8)))
    png[24] = 4  # truecolour at 4 bits: no such format (and the CRC no longer matches)
    with pytest.raises(PngError, match="bad CRC"):
        png_header(bytes(png))
