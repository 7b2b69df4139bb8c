"""`make pictures`: a picture of every shipped model, from its ONNX file alone."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ganserve.cli import main as ganserve
from ganserve.export import pictures
from ganserve.grid import GAP
from ganserve.v1 import ganserve_pb2 as pb
from tests.servers import (
    CGAN,
    CYCLE,
    DCGAN,
    INPAINT,
    MODELS,
    PIX2PIX,
    SR4X,
    RunningServer,
    images,
)


def test_a_generators_picture_is_what_ganserve_grid_gets_from_the_server(
    server: RunningServer, tmp_path: Path
) -> None:
    for model in (CGAN, DCGAN):
        out = tmp_path / f"{model}.png"
        assert ganserve(["grid", model, "--server", server.address, "--out", str(out)]) == 0
        with Image.open(io.BytesIO(out.read_bytes())) as image:
            served = np.asarray(image)
        local = pictures.generator_grid(MODELS / model / "1" / "model.onnx")
        assert np.array_equal(local[..., 0], served), model


def test_the_path_picture_is_what_interpolate_serves_and_the_truncation_grid_what_sample_does(
    server: RunningServer,
) -> None:
    for model in (CGAN, DCGAN):
        onnx = MODELS / model / "1" / "model.onnx"
        local, served = pictures.path_images(onnx), []
        for row in range(pictures.PATHS):
            (a, i), (b, j) = pictures.path_ends(row)
            request = pb.InterpolateRequest(model=model, steps=pictures.STEPS)
            request.start.image.seed, request.start.image.index = a, i
            request.end.image.seed, request.end.image.index = b, j
            if model == CGAN:
                request.label = pictures.PATH_LABELS[row]
            served.append(images(server.stub.Interpolate(request)))
        assert np.array_equal(local, np.concatenate(served)), model
    local = pictures.truncation_images(MODELS / DCGAN / "1" / "model.onnx")
    for k, t in enumerate(pictures.THRESHOLDS):
        call = pb.SampleRequest(model=DCGAN, seed=pictures.SEED, count=10, truncation=t)
        assert np.array_equal(local[10 * k : 10 * k + 10], images(server.stub.Sample(call)))


def test_the_pictures_command_draws_every_model_of_a_repository(tmp_path: Path) -> None:
    assert pictures.main(["--models", str(MODELS), "--out", str(tmp_path)]) == 0
    drawn = sorted(p.stem for p in tmp_path.glob("*.png"))
    models = [p.name for p in MODELS.iterdir() if (p / "1").is_dir()]
    generators = [m for m in models if m not in (PIX2PIX, SR4X, INPAINT, CYCLE)]
    latent_space = [f"{m}{suffix}" for m in generators for suffix in ("-path", "-truncation")]
    assert drawn == sorted(models + latent_space)
    with Image.open(tmp_path / "mnist-sr4x.png") as image:
        sr = np.asarray(image)
    # three rows (source, output, target) of the ten classes' first held-out digit, 32x32 x2
    assert sr.shape[:2] == (3 * (64 + GAP) + GAP, 10 * (64 + GAP) + GAP)
    shipped = Path(__file__).resolve().parents[2] / "docs" / "images"
    for path in tmp_path.glob("*.png"):  # the pictures in docs/ are the shipped models' own:
        # equal where they were made; another CPU's kernels may round a few pixels otherwise
        drawn, documented = (read(p) for p in (path, shipped / path.name))
        assert drawn.shape == documented.shape, path.name
        differ = np.abs(drawn.astype(int) - documented) > 2
        assert differ.mean() < 0.002, (path.name, differ.mean())


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)
