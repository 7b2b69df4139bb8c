"""Inpainting over the wire: Translate with a mask (tensor or PNG), the OIP's `mask` input, and
the SDK's `inpaint`; pixels outside the holes come back as they went."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from ganserve import errors
from ganserve.export.evaluate import OnnxGenerator
from ganserve.oip import grpc_service_pb2 as oip
from ganserve.oip import grpc_service_pb2_grpc as oip_grpc
from ganserve.png import encode_png
from ganserve.tensor import to_tensor
from ganserve.v1 import ganserve_pb2 as pb
from tests.clients.test_sdk import Mirror
from tests.servers import INPAINT, MODELS, PIX2PIX, RunningServer, images


def digits_and_holes(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 32, 32, 1] digit-like images and bool [n, 32, 32] holes over their middles."""
    rng = np.random.default_rng(0)
    image = np.zeros((n, 32, 32, 1), np.uint8)
    image[:, 6:26, 12:20] = 255  # a bar: a "1"
    image = np.maximum(image, rng.integers(0, 30, image.shape, dtype=np.uint8))
    holes = np.zeros((n, 32, 32), bool)
    for i in range(n):
        top, left = 8 + i, 8 + 2 * i
        holes[i, top : top + 10, left : left + 12] = True
    return image, holes


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest, server: RunningServer) -> Iterator[Mirror]:
    mirror = Mirror(request.param, server.address, seed=0)
    yield mirror
    mirror.close()


def test_inpaint_fills_the_holes_and_returns_every_other_pixel_unchanged(client: Mirror) -> None:
    image, holes = digits_and_holes()
    got = client.inpaint(INPAINT, image, holes).pixels
    assert got.shape == image.shape and got.dtype == np.uint8
    keep = ~holes[..., None]
    assert np.array_equal(
        got[np.broadcast_to(keep, got.shape)], image[np.broadcast_to(keep, image.shape)]
    )
    assert not np.array_equal(got, image)  # the holes were filled
    # the same bytes as the ONNX file run locally, and 0 / 1 masks read as 0 / 255
    local = OnnxGenerator(MODELS / INPAINT / "1" / "model.onnx").session.run(
        None, {"image": image, "mask": holes[..., None].astype(np.uint8) * 255}
    )[0]
    assert np.array_equal(got, local)
    assert np.array_equal(client.inpaint(INPAINT, image, holes.astype(np.uint8)).pixels, got)
    info = client.describe_model(INPAINT)
    assert info.kind == "translation" and info.masked
    assert not client.describe_model(PIX2PIX).masked


def test_masks_as_pngs_mean_what_the_tensor_means(server: RunningServer) -> None:
    image, holes = digits_and_holes(3)
    request = pb.TranslateRequest(model=INPAINT, images=to_tensor(image))
    request.mask_png.extend(encode_png(h[..., None].astype(np.uint8) * 255) for h in holes)
    by_png = images(server.stub.Translate(request))
    by_tensor = pb.TranslateRequest(model=INPAINT, images=to_tensor(image),
                                    mask=to_tensor(holes.astype(np.uint8) * 255))  # fmt: skip
    assert np.array_equal(by_png, images(server.stub.Translate(by_tensor)))


@pytest.mark.parametrize(
    ("model", "mask", "words"),
    [
        (INPAINT, None, "mask: required by an inpainting model: uint8 [2, 32, 32], 255 = fill"),
        (INPAINT, np.zeros((2, 16, 32), np.uint8), "mask: uint8[2, 16, 32]; must be uint8 [2, 32"),
        (INPAINT, np.zeros((1, 32, 32), np.uint8), "mask: uint8[1, 32, 32]; must be"),
        (INPAINT, np.zeros((2, 32, 32), np.float32), "mask: float32[2, 32, 32]; must be uint8"),
        (INPAINT, np.full((2, 32, 32), 128, np.uint8), "mask: values 128; a mask is binary"),
        (INPAINT, np.array([0, 1, 255] * 683, np.uint8)[:2048].reshape(2, 32, 32),
         "mask: values 0, 1, 255; a mask is binary"),
        (PIX2PIX, np.zeros((2, 32, 32), np.uint8), "mask: model 'mnist-edges2digits' fills no"),
    ],
)  # fmt: skip
def test_a_missing_missized_or_non_binary_mask_is_invalid_argument_naming_it(
    server: RunningServer, model: str, mask: np.ndarray | None, words: str
) -> None:
    image, _ = digits_and_holes(2)
    request = pb.TranslateRequest(model=model, images=to_tensor(image))
    if mask is not None:
        request.mask.CopyFrom(to_tensor(mask))
    with pytest.raises(grpc.RpcError) as info:
        server.stub.Translate(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()


def test_bad_mask_pngs_are_named_as_mask_png(server: RunningServer) -> None:
    image, holes = digits_and_holes(2)
    request = pb.TranslateRequest(model=INPAINT, images=to_tensor(image))
    request.mask_png.extend([encode_png(holes[0, :16, :, None].astype(np.uint8) * 255)] * 2)
    with pytest.raises(grpc.RpcError) as info:
        server.stub.Translate(request)
    assert "mask_png: 2 of 16x32; one per image, 32x32 as the images" in info.value.details()
    request.mask_png[:] = [b"not a png", b"nor this"]
    with pytest.raises(grpc.RpcError) as info:
        server.stub.Translate(request)
    assert info.value.details().startswith("mask_png[0]: ")


def test_the_sdk_refuses_a_mask_it_cannot_send(client: Mirror) -> None:
    image, holes = digits_and_holes(2)
    with pytest.raises(errors.InvalidArgument, match="masks: float64"):
        client.inpaint(INPAINT, image, holes.astype(np.float64))


def test_oip_takes_the_mask_as_an_input_and_gives_the_same_bytes(server: RunningServer) -> None:
    image, holes = digits_and_holes(2)
    mask = holes[..., None].astype(np.uint8) * 255
    stub = oip_grpc.GRPCInferenceServiceStub(server.channel)
    request = oip.ModelInferRequest(model_name=INPAINT)
    request.inputs.add(name="image", datatype="UINT8", shape=list(image.shape))
    request.inputs.add(name="mask", datatype="UINT8", shape=list(mask.shape))
    request.raw_input_contents.extend([image.tobytes(), mask.tobytes()])
    v1 = pb.TranslateRequest(model=INPAINT, images=to_tensor(image), mask=to_tensor(mask))
    assert (
        stub.ModelInfer(request).raw_output_contents[0]
        == images(server.stub.Translate(v1)).tobytes()
    )
    metadata = stub.ModelMetadata(oip.ModelMetadataRequest(name=INPAINT))
    assert [(i.name, i.datatype, list(i.shape)) for i in metadata.inputs] == [
        ("image", "UINT8", [-1, -1, -1, 1]), ("mask", "UINT8", [-1, -1, -1, 1])]  # fmt: skip
    del request.inputs[1], request.raw_input_contents[1]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert "mask: required" in info.value.details()
