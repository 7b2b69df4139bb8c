"""`ganserve grid`: a picture of what a served generator makes, from a running server."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganserve import Client
from ganserve.cli import main
from ganserve.grid import GAP, GAP_LEVEL, grid_labels, tile
from tests.clients.test_bulk import one_line
from tests.servers import CGAN, DCGAN, PIX2PIX, RunningServer


def read_png(path: Path) -> np.ndarray:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        return np.asarray(image)


def cells(picture: np.ndarray, rows: int, columns: int, size: int) -> np.ndarray:
    """The images of a grid [rows * columns, size, size] back out of it, row by row."""
    step = size + GAP
    return np.stack(
        [
            picture[GAP + r * step : GAP + r * step + size, GAP + c * step : GAP + c * step + size]
            for r in range(rows)
            for c in range(columns)
        ]
    )


def test_tile_places_images_row_by_row_with_gaps() -> None:
    images = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3, 1)
    out = tile(images, columns=2, scale=2)  # cells of 4 x 6, 3 rows (the last one half full)
    assert out.shape == (3 * (4 + GAP) + GAP, 2 * (6 + GAP) + GAP, 1)
    for i, image in enumerate(images):
        top, left = GAP + (i // 2) * (4 + GAP), GAP + (i % 2) * (6 + GAP)
        cell = out[top : top + 4, left : left + 6]
        assert np.array_equal(cell, image.repeat(2, 0).repeat(2, 1)), i
        out[top : top + 4, left : left + 6] = GAP_LEVEL
    assert (out == GAP_LEVEL).all()  # the rest: gaps and the blank sixth cell
    with pytest.raises(ValueError, match="uint8"):
        tile(images.astype(np.float32), 2)


def test_a_conditional_grid_has_a_row_per_label_and_the_servers_images(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g.png"
    args = ["--server", server.address, "--labels", "3,8", "--columns", "5", "--seed", "7"]
    assert main(["grid", CGAN, *args, "--scale", "1", "--out", str(out)]) == 0
    assert f"{CGAN} v1, 10 images" in capsys.readouterr().out
    picture = read_png(out)
    assert picture.shape == (2 * (32 + GAP) + GAP, 5 * (32 + GAP) + GAP)
    with Client(server.address) as client:
        want = client.generate(CGAN, labels=grid_labels([3, 8], 5), seed=7)
    assert list(want.labels) == [3] * 5 + [8] * 5
    assert np.array_equal(cells(picture, 2, 5, 32), want.pixels[..., 0])


def test_an_unconditional_grid_is_rows_times_columns_samples(
    server: RunningServer, tmp_path: Path
) -> None:
    out = tmp_path / "g.png"
    assert main(["grid", DCGAN, "--server", server.address, "--rows", "3", "--columns", "4",
                 "--out", str(out)]) == 0  # fmt: skip
    picture = read_png(out)
    with Client(server.address) as client:
        want = client.sample(DCGAN, 12, seed=0).pixels
    assert np.array_equal(cells(picture, 3, 4, 64), want[..., 0].repeat(2, 1).repeat(2, 2))


@pytest.mark.parametrize(
    ("model", "extra", "status", "needles"),
    [
        (PIX2PIX, [], 2, ("translation", "ganserve translate")),
        (DCGAN, ["--labels", "1"], 2, ("--labels", "unconditional")),
        (CGAN, ["--labels", "1,12"], 2, ("--labels", "[12]")),
        (CGAN, ["--labels", "one"], 2, ("--labels", "comma-separated")),
        ("no-such-model", [], 1, ("no-such-model",)),
    ],
)
def test_what_it_cannot_draw_is_one_line_and_no_file(
    server: RunningServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: str,
    extra: list[str],
    status: int,
    needles: tuple[str, ...],
) -> None:
    out = tmp_path / "g.png"
    assert main(["grid", model, "--server", server.address, *extra, "--out", str(out)]) == status
    one_line(capsys.readouterr().err, "ganserve grid", *needles)
    assert not out.exists()
