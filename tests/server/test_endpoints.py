"""Every rpc end to end on the shipped models, over a real channel."""

from __future__ import annotations

import io
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from PIL import Image

from ganserve.latent import latents
from ganserve.tensor import to_uint8
from ganserve.training import data
from ganserve.training.config import TrainConfig
from ganserve.training.srgan import bicubic
from ganserve.v1 import ganserve_pb2 as pb
from tests.servers import (
    CGAN,
    CYCLE,
    DCGAN,
    INPAINT,
    MODELS,
    PIX2PIX,
    SR4X,
    VAE,
    RunningServer,
    images,
)


def test_list_and_describe(server: RunningServer) -> None:
    listed = {m.name: m for m in server.stub.ListModels(pb.ListModelsRequest()).models}
    assert set(listed) == {p.name for p in MODELS.iterdir() if (p / "1").is_dir()}
    assert {DCGAN, CGAN, PIX2PIX, VAE, SR4X, INPAINT, CYCLE} <= set(listed)
    assert listed[DCGAN].kind == "unconditional" and listed[DCGAN].latent_size == 100
    assert listed[VAE].kind == "unconditional" and listed[VAE].latent_size == 16
    info = server.stub.DescribeModel(pb.DescribeModelRequest(model=CGAN))
    assert info.kind == "conditional" and info.num_classes == 10
    assert list(info.class_names) == [str(i) for i in range(10)]
    assert (info.height, info.width, info.channels) == (32, 32, 1)
    assert info.versions[0].state == pb.VersionState.READY
    assert info.execution_provider == "CPUExecutionProvider"
    assert '"family": "cgan"' in info.metadata["ganserve.provenance"]
    translation = server.stub.DescribeModel(pb.DescribeModelRequest(model=PIX2PIX))
    assert translation.kind == "translation" and translation.size_multiple == 32
    assert translation.scale == 1
    sr = server.stub.DescribeModel(pb.DescribeModelRequest(model=SR4X))
    assert (sr.kind, sr.size_multiple, sr.scale) == ("translation", 1, 4)
    assert (sr.height, sr.width) == (32, 32)  # trained output size: 8x8 sources


def test_the_vae_decoder_is_sampled_like_any_unconditional_generator(
    server: RunningServer,
) -> None:
    first = images(server.stub.Sample(pb.SampleRequest(model=VAE, count=6, seed=4)))
    again = images(server.stub.Sample(pb.SampleRequest(model=VAE, count=6, seed=4)))
    assert first.shape == (6, 32, 32, 1) and first.tobytes() == again.tobytes()
    assert first.std() > 10 and len({im.tobytes() for im in first}) == 6  # six digits


def test_sample_raw_float_and_png(server: RunningServer) -> None:
    raw = server.stub.Sample(pb.SampleRequest(model=DCGAN, count=5, seed=1))
    pixels = images(raw)
    assert pixels.shape == (5, 32, 32, 1) and raw.layout == "NHWC" and raw.version >= 1
    assert pixels.std() > 10  # digits, not a blank
    floats = images(
        server.stub.Sample(pb.SampleRequest(model=DCGAN, count=5, seed=1, encoding=pb.RAW_FLOAT32))
    )
    assert floats.dtype == np.float32 and np.allclose((floats + 1) * 127.5, pixels, atol=1e-3)
    png = server.stub.Sample(pb.SampleRequest(model=DCGAN, count=5, seed=1, encoding=pb.PNG))
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in png.png])
    assert np.array_equal(decoded[..., None], pixels)


def test_explicit_latents_match_the_seed_contract(server: RunningServer) -> None:
    z = latents(9, 40, 3, 100)
    by_seed = server.stub.Sample(pb.SampleRequest(model=DCGAN, count=3, seed=9, start_index=40))
    tensor = pb.Tensor(dtype="float32", shape=z.shape, data=z.tobytes())
    by_latent = server.stub.Sample(pb.SampleRequest(model=DCGAN, latents=tensor))
    assert images(by_seed).tobytes() == images(by_latent).tobytes()


def test_generate_three_ways_to_give_labels(server: RunningServer) -> None:
    each = server.stub.Generate(
        pb.GenerateRequest(model=CGAN, seed=2, labels=pb.LabelList(values=[3, 1, 4]))
    )
    assert list(each.labels) == [3, 1, 4] and images(each).shape == (3, 32, 32, 1)
    one = server.stub.Generate(pb.GenerateRequest(model=CGAN, seed=2, count=4, label=7))
    assert list(one.labels) == [7, 7, 7, 7]
    balanced = server.stub.Generate(
        pb.GenerateRequest(model=CGAN, seed=2, count=12, start_index=5, balanced=True)
    )
    assert list(balanced.labels) == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6]
    # the same (seed, index, label) is the same image however it was asked for
    assert images(each)[0].tobytes() != images(one)[0].tobytes()
    again = server.stub.Generate(pb.GenerateRequest(model=CGAN, seed=2, count=1, label=3))
    assert images(again)[0].tobytes() == images(each)[0].tobytes()


def test_streams_cover_the_range_in_bounded_chunks(server: RunningServer) -> None:
    chunks = list(
        server.stub.SampleStream(pb.SampleRequest(model=DCGAN, count=1000, seed=4, chunk_size=300))
    )
    assert [c.start_index for c in chunks] == [0, 300, 600, 900]
    assert [images(c).shape[0] for c in chunks] == [300, 300, 300, 100]
    whole = np.concatenate([images(c) for c in chunks])
    unary = images(server.stub.Sample(pb.SampleRequest(model=DCGAN, count=1000, seed=4)))
    assert whole.tobytes() == unary.tobytes()
    generated = list(
        server.stub.GenerateStream(
            pb.GenerateRequest(model=CGAN, count=25, seed=4, chunk_size=10, balanced=True)
        )
    )
    labels = [label for c in generated for label in c.labels]
    assert labels == [i % 10 for i in range(25)]
    wanted = [(3 * i) % 10 for i in range(25)]  # one label per image, longer than a chunk
    listed = list(
        server.stub.GenerateStream(
            pb.GenerateRequest(
                model=CGAN, seed=4, chunk_size=10, labels=pb.LabelList(values=wanted)
            )
        )
    )
    assert [label for c in listed for label in c.labels] == wanted
    assert [c.start_index for c in listed] == [0, 10, 20]


def test_translate_raw_png_and_stream(server: RunningServer) -> None:
    rng = np.random.default_rng(0)
    source = (rng.random((3, 64, 32, 1)) > 0.8).astype(np.uint8) * 255
    tensor = pb.Tensor(dtype="uint8", shape=source.shape, data=source.tobytes())
    raw = images(server.stub.Translate(pb.TranslateRequest(model=PIX2PIX, images=tensor)))
    assert raw.shape == (3, 64, 32, 1)
    pngs = []
    for image in source:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    from_png = images(server.stub.Translate(pb.TranslateRequest(model=PIX2PIX, png=pngs)))
    assert from_png.tobytes() == raw.tobytes()
    requests = [pb.TranslateRequest(model=PIX2PIX, images=tensor) for _ in range(3)]
    streamed = list(server.stub.TranslateStream(iter(requests)))
    assert len(streamed) == 3 and all(images(s).tobytes() == raw.tobytes() for s in streamed)


def test_translate_on_a_super_resolution_model_upscales(server: RunningServer) -> None:
    _, held = data.mnist(TrainConfig(family="srgan", scale=4))
    assert held.source is not None
    source = to_uint8(held.source[:6].numpy().transpose(0, 2, 3, 1))  # 8x8 digits
    tensor = pb.Tensor(dtype="uint8", shape=source.shape, data=source.tobytes())
    out = images(server.stub.Translate(pb.TranslateRequest(model=SR4X, images=tensor)))
    assert out.shape == (6, 32, 32, 1) and out.dtype == np.uint8
    real = to_uint8(held.image[:6].numpy().transpose(0, 2, 3, 1)).astype(int)
    up = bicubic(held.source[:6], 4).numpy().transpose(0, 2, 3, 1)
    assert np.abs(out.astype(int) - real).mean() < np.abs(to_uint8(up).astype(int) - real).mean()
    wide = np.zeros((2, 5, 12, 1), np.uint8)  # any size: 5x12 → 20x48
    tensor = pb.Tensor(dtype="uint8", shape=wide.shape, data=wide.tobytes())
    raw = server.stub.Translate(
        pb.TranslateRequest(model=SR4X, images=tensor, encoding=pb.RAW_FLOAT32)
    )
    assert images(raw).shape == (2, 20, 48, 1)


def test_super_resolution_pixel_budget_counts_output_pixels(
    make_server: Callable[..., RunningServer],
) -> None:
    small = make_server(max_translation_pixels=2 * 32 * 32)
    for n, ok in ((2, True), (3, False)):  # 8x8 sources, 32x32 out: 2 fit, 3 do not
        source = np.zeros((n, 8, 8, 1), np.uint8)
        tensor = pb.Tensor(dtype="uint8", shape=source.shape, data=source.tobytes())
        request = pb.TranslateRequest(model=SR4X, images=tensor)
        if ok:
            assert images(small.stub.Translate(request)).shape == (n, 32, 32, 1)
            continue
        with pytest.raises(grpc.RpcError) as info:
            small.stub.Translate(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "upscaled 4x" in info.value.details()


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.SampleRequest(model=DCGAN, count=0), "count"),
        (pb.SampleRequest(model=DCGAN, count=5000), "count"),
        (pb.SampleRequest(model=DCGAN, count=1, truncation=0.01), "truncation"),
        (pb.SampleRequest(model=DCGAN, count=1, encoding=9), "encoding"),
        (
            pb.SampleRequest(
                model=DCGAN, latents=pb.Tensor(dtype="float32", shape=[1, 7], data=bytes(28))
            ),
            "latents",
        ),
        (
            pb.SampleRequest(
                model=DCGAN, latents=pb.Tensor(dtype="float32", shape=[1, 100], data=bytes(3))
            ),
            "latents.data",
        ),
        (pb.SampleRequest(model="", count=1), "model"),
    ],
)
def test_bad_sample_fields_are_named(
    server: RunningServer, request_: pb.SampleRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        server.stub.Sample(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field)


def test_bad_generate_and_translate_fields(server: RunningServer) -> None:
    cases = [
        (lambda: server.stub.Generate(pb.GenerateRequest(model=CGAN, count=2, label=10)), "label"),
        (lambda: server.stub.Generate(pb.GenerateRequest(model=CGAN, count=2)), "labels"),
        (
            lambda: server.stub.Generate(
                pb.GenerateRequest(model=CGAN, count=3, labels=pb.LabelList(values=[1])),
            ),
            "labels",
        ),
        (
            lambda: server.stub.Translate(
                pb.TranslateRequest(
                    model=PIX2PIX,
                    images=pb.Tensor(dtype="uint8", shape=[1, 30, 32, 1], data=bytes(960)),
                )
            ),
            "images",
        ),
        (lambda: server.stub.Translate(pb.TranslateRequest(model=PIX2PIX, png=[b"nope"])), "png"),
        (lambda: server.stub.Translate(pb.TranslateRequest(model=PIX2PIX)), "images, png"),
    ]
    for call, field in cases:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert info.value.details().startswith(field), info.value.details()


def test_unknown_model_version_and_wrong_kind(server: RunningServer) -> None:
    for request, code in [
        (pb.SampleRequest(model="nope", count=1), grpc.StatusCode.NOT_FOUND),
        (pb.SampleRequest(model=DCGAN, version=99, count=1), grpc.StatusCode.NOT_FOUND),
        (pb.SampleRequest(model=CGAN, count=1), grpc.StatusCode.FAILED_PRECONDITION),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            server.stub.Sample(request)
        assert info.value.code() == code
    with pytest.raises(grpc.RpcError) as info:
        server.stub.Generate(pb.GenerateRequest(model=DCGAN, count=1, label=1))
    assert "unconditional; call Sample" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        server.stub.DescribeModel(pb.DescribeModelRequest(model="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_container_healthcheck_asks_the_health_service(server: RunningServer) -> None:
    from ganserve.server.healthcheck import check, main

    assert check(server.address)
    assert main([server.address]) == 0
    assert main(["127.0.0.1:1"]) == 1  # nothing listens there


def test_reflection_lists_the_services(server: RunningServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in reply.list_services_response.service}
    assert {"ganserve.v1.Generator", "grpc.health.v1.Health"} <= names


def test_size_limits_are_enforced(make_server: Callable[..., RunningServer]) -> None:
    small = make_server(max_translation_pixels=64 * 32 * 2, max_message_bytes=1 << 20)
    source = np.zeros((3, 64, 32, 1), np.uint8)  # 3 x 64 x 32 pixels: over the limit of 2
    tensor = pb.Tensor(dtype="uint8", shape=source.shape, data=source.tobytes())
    with pytest.raises(grpc.RpcError) as info:
        small.stub.Translate(pb.TranslateRequest(model=PIX2PIX, images=tensor))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:  # 4096 float images of 32x32 = 16 MB > 1 MiB
        small.stub.Sample(pb.SampleRequest(model=DCGAN, count=4096, encoding=pb.RAW_FLOAT32))
    assert "message limit" in info.value.details()


def test_the_unpaired_translation_model_turns_digits_into_ink_on_paper(
    server: RunningServer,
) -> None:
    from ganserve.export.evaluate import OnnxGenerator
    from ganserve.tensor import to_tensor

    _, held = data.load(TrainConfig(family="pix2pix"))
    digits = ((held.image[:8] + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    request = pb.TranslateRequest(model=CYCLE, images=to_tensor(digits))
    reply = images(server.stub.Translate(request))
    local = OnnxGenerator(MODELS / CYCLE / "1" / "model.onnx").session.run(None, {"image": digits})
    assert np.array_equal(reply, local[0])
    assert digits.mean() < 60 and reply.mean() > 150  # white on black in, dark ink on paper out
