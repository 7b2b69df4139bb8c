"""The Open Inference Protocol on ganserve's port: with the stock tritonclient, and bytes that
agree with ganserve.v1 for the same seed (one implementation serves both)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from ganserve.oip import grpc_service_pb2 as oip
from ganserve.oip import grpc_service_pb2_grpc as oip_grpc
from ganserve.v1 import ganserve_pb2 as pb
from tests.server.triton_calls import layout
from tests.servers import CGAN, DCGAN, PIX2PIX, RunningServer, images

CALLS = Path(__file__).with_name("triton_calls.py")


def triton(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CALLS), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_every_message_is_laid_out_as_tritonclients() -> None:
    """Names, numbers and types of every field we define are the specification's."""
    theirs, ours = triton("--descriptors"), layout(oip.DESCRIPTOR)
    for name, fields in ours.items():
        if name != "rpcs":
            assert fields == theirs[name], name
    assert all(rpc in theirs["rpcs"] for rpc in ours["rpcs"])


def test_tritonclient_calls_ganserve(server: RunningServer) -> None:
    got = triton(server.address)
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["server"]["name"] == "ganserve"
    assert "model_repository" in got["server"]["extensions"]
    metadata = got["metadata"]
    assert [i["name"] for i in metadata["inputs"]] == ["z", "label"]
    assert metadata["outputs"][0] == {"name": "image_out", "datatype": "UINT8",
                                      "shape": ["-1", "32", "32", "1"]}  # fmt: skip
    names = {(m["name"], m.get("state")) for m in got["index"]["models"]}
    assert {(DCGAN, "READY"), (CGAN, "READY"), (PIX2PIX, "READY")} <= names

    z = np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32)
    request = pb.SampleRequest(model=DCGAN, latents=pb.Tensor(dtype="float32", shape=[3, 100]))
    request.latents.data = z.tobytes()
    assert got["z_shape"] == [3, 32, 32, 1]
    assert got["z_digest"] == digest(images(server.stub.Sample(request)))
    # the same bytes as ganserve.v1 for the same seed and index, whichever protocol asked
    same = server.stub.Sample(pb.SampleRequest(model=DCGAN, seed=7, start_index=5, count=4))
    assert got["seed_shape"] == [4, 32, 32, 1]
    assert got["seed_digest"] == digest(images(same))
    labels = pb.LabelList(values=[3, 1, 4, 1])
    cgan = server.stub.Generate(pb.GenerateRequest(model=CGAN, seed=9, labels=labels))
    assert got["cgan_digest"] == digest(images(cgan))
    assert got["translate_shape"] == [2, 32, 32, 1]
    assert got["errors"] == {
        "unknown_model": "StatusCode.NOT_FOUND",
        "bad_datatype": "StatusCode.INVALID_ARGUMENT",
        "load": "StatusCode.UNAVAILABLE",  # only with --model-control explicit
        "unload": "StatusCode.UNAVAILABLE",
    }


def test_tritonclient_unloads_and_loads_models_under_explicit_control(
    make_server: Callable,
) -> None:
    server = make_server(model_control="explicit")
    got = triton("--control", server.address)
    assert got["before"] and not got["unloaded"] and got["loaded"]
    states = {m["name"]: m.get("state") for m in got["index"]["models"]}
    assert states[CGAN] == "UNAVAILABLE" and states[DCGAN] == "READY"
    assert len(images(server.stub.Generate(pb.GenerateRequest(model=CGAN, count=2, label=1))))


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> oip_grpc.GRPCInferenceServiceStub:
    return oip_grpc.GRPCInferenceServiceStub(server.channel)


def _infer(model: str, **parameters: int) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model)
    for key, value in parameters.items():
        request.parameters[key].int64_param = value
    return request


def test_typed_contents_give_the_bytes_raw_contents_give(
    stub: oip_grpc.GRPCInferenceServiceStub,
) -> None:
    z = np.random.default_rng(1).standard_normal((2, 100)).astype(np.float32)
    raw = oip.ModelInferRequest(model_name=DCGAN, raw_input_contents=[z.tobytes()])
    raw.inputs.add(name="z", datatype="FP32", shape=[2, 100])
    typed = oip.ModelInferRequest(model_name=DCGAN)
    typed.inputs.add(name="z", datatype="FP32", shape=[2, 100]).contents.fp32_contents[:] = (
        z.ravel().tolist()
    )
    a, b = stub.ModelInfer(raw), stub.ModelInfer(typed)
    assert a.raw_output_contents == b.raw_output_contents
    assert list(a.outputs[0].shape) == [2, 32, 32, 1] and a.outputs[0].datatype == "UINT8"


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (_infer(DCGAN), grpc.StatusCode.INVALID_ARGUMENT, "'z'"),
        (_infer(DCGAN, count=5000), grpc.StatusCode.INVALID_ARGUMENT, "'count']: 5000"),
        (_infer("nope", count=1), grpc.StatusCode.NOT_FOUND, "no model"),
        (_infer(CGAN, count=2), grpc.StatusCode.INVALID_ARGUMENT, "'label'"),
        (_infer(PIX2PIX, count=1), grpc.StatusCode.INVALID_ARGUMENT, "'image'"),
    ],
)
def test_bad_infer_requests_name_what_is_wrong(
    stub: oip_grpc.GRPCInferenceServiceStub,
    request_: oip.ModelInferRequest,
    code: grpc.StatusCode,
    words: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_)
    assert info.value.code() == code
    assert words in info.value.details()


def test_raw_contents_of_the_wrong_size_are_refused(
    stub: oip_grpc.GRPCInferenceServiceStub,
) -> None:
    request = oip.ModelInferRequest(model_name=DCGAN, raw_input_contents=[b"\0" * 12])
    request.inputs.add(name="z", datatype="FP32", shape=[2, 100])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 800" in info.value.details()


def test_oip_calls_are_counted_under_their_method(
    server: RunningServer, stub: oip_grpc.GRPCInferenceServiceStub
) -> None:
    before = server.metric("ganserve_requests_total", model=DCGAN, method="ModelInfer", code="OK")
    stub.ModelInfer(_infer(DCGAN, seed=1, count=3))
    after = server.metric("ganserve_requests_total", model=DCGAN, method="ModelInfer", code="OK")
    assert after == before + 1
    assert server.metric("ganserve_images_total", model=DCGAN, method="ModelInfer") >= 3


def _with(request: oip.ModelInferRequest, **strings: str) -> oip.ModelInferRequest:
    for key, value in strings.items():
        request.parameters[key].string_param = value
    return request


def _labels(datatype: str, values: list[Any], field: str) -> oip.ModelInferRequest:
    request = _infer(CGAN)
    tensor = request.inputs.add(name="label", datatype=datatype, shape=[len(values)])
    getattr(tensor.contents, field).extend(values)
    return request


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (_with(_infer(DCGAN, count=1), seed="²"), "parameters['seed']: '²'; an integer"),
        (_with(_infer(DCGAN), count="9" * 5000), "(5000 characters); an integer"),
        (_with(_infer(DCGAN), count=str(10**30)), "parameters['count']: '1000"),
        (_with(_infer(DCGAN), count=" 7"), "parameters['count']: ' 7'"),
        (_with(_infer(DCGAN), count="-1"), "parameters['count']: '-1'"),
        (_infer(DCGAN, count=-1), "parameters['count']: -1; must be 1 to"),
        (_with(_infer(DCGAN), count=str(2**64)), "parameters['count']: 18446744073709551616"),
        (_infer(DCGAN, count=1, seed=-1), "parameters['seed']: -1; 0 to 2^64 - 1"),
        (_infer(DCGAN, count=1, start_index=-5), "parameters['start_index']: -5; 0 to 2^64"),
        (_labels("FP32", [1.0, 2.0], "fp32_contents"), "inputs['label']: datatype FP32; INT64"),
    ],
)
def test_odd_parameters_and_inputs_are_invalid_argument_naming_the_field(
    stub: oip_grpc.GRPCInferenceServiceStub, request_: oip.ModelInferRequest, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert words in info.value.details()


def test_a_uint8_label_is_accepted_and_means_what_int64_means(
    stub: oip_grpc.GRPCInferenceServiceStub,
) -> None:
    small = stub.ModelInfer(_with(_labels("UINT8", [3, 9], "uint_contents"), seed="4"))
    wide = stub.ModelInfer(_with(_labels("INT64", [3, 9], "int64_contents"), seed="4"))
    assert small.raw_output_contents == wide.raw_output_contents
    assert list(small.outputs[0].shape) == [2, 32, 32, 1]


@pytest.mark.parametrize("version", ["²", "9" * 5000, "0", "01", "-1", " 1", "1.0"])
def test_versions_that_are_not_version_numbers_are_invalid_argument(
    stub: oip_grpc.GRPCInferenceServiceStub, version: str
) -> None:
    calls = {
        "model_version": lambda: stub.ModelInfer(
            oip.ModelInferRequest(model_name=DCGAN, model_version=version)
        ),
        "version": lambda: stub.ModelMetadata(
            oip.ModelMetadataRequest(name=DCGAN, version=version)
        ),
    }
    ready = lambda: stub.ModelReady(oip.ModelReadyRequest(name=DCGAN, version=version))  # noqa: E731
    for field, call in [*calls.items(), ("version", ready)]:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, version)
        assert info.value.details().startswith(f"{field}: ") and "1 to 2^63 - 1" in (
            info.value.details()
        )


def test_a_well_formed_version_that_does_not_exist_is_not_found(
    stub: oip_grpc.GRPCInferenceServiceStub,
) -> None:
    for version in ("7", str(2**63 - 1)):
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(oip.ModelMetadataRequest(name=DCGAN, version=version))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelMetadata(oip.ModelMetadataRequest(name=DCGAN, version=str(2**63)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _path(model: str, steps: int, **parameters: int) -> oip.ModelInferRequest:
    return _infer(model, path_steps=steps, **parameters)


def test_a_path_by_parameters_is_ganserve_v1s_interpolate(
    server: RunningServer, stub: oip_grpc.GRPCInferenceServiceStub
) -> None:
    end = pb.LatentPoint(image=pb.ImageRef(seed=9, index=2))
    start = pb.LatentPoint(image=pb.ImageRef(seed=7, index=5))
    v1 = server.stub.Interpolate(pb.InterpolateRequest(model=DCGAN, start=start, end=end, steps=6))
    seeded = stub.ModelInfer(_path(DCGAN, 6, seed=7, start_index=5, path_end_seed=9,
                                   path_end_index=2))  # fmt: skip
    assert list(seeded.outputs[0].shape) == [6, 32, 32, 1]
    assert seeded.raw_output_contents[0] == images(v1).tobytes()
    # the ends as the two rows of z, along a line, for a conditional model's one class
    z = np.random.default_rng(3).standard_normal((2, 100)).astype(np.float32)
    request = _with(_path(CGAN, 4), path_method="linear")
    request.inputs.add(name="z", datatype="FP32", shape=[2, 100])
    request.inputs.add(name="label", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([z.tobytes(), np.int64(4).tobytes()])
    ends = [pb.LatentPoint(latent=pb.Tensor(dtype="float32", shape=[100], data=r.tobytes()))
            for r in z]  # fmt: skip
    path = pb.InterpolateRequest(model=CGAN, start=ends[0], end=ends[1], steps=4, label=4)
    path.method = pb.InterpolateRequest.LINEAR
    v1 = server.stub.Interpolate(path)
    assert stub.ModelInfer(request).raw_output_contents[0] == images(v1).tobytes()


def _labelled(request: oip.ModelInferRequest, labels: list[int]) -> oip.ModelInferRequest:
    request.inputs.add(name="label", datatype="INT64", shape=[len(labels)])
    request.inputs[-1].contents.int64_contents.extend(labels)
    return request


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (_path(DCGAN, 1), "steps: 1; at least 2"),
        (_path(DCGAN, 5000), "parameters['path_steps']: 5000; must be 1 to"),
        (_path(DCGAN, 3, count=3), "give path_steps or count, not both"),
        (_with(_path(DCGAN, 3), path_method="cubic"), "parameters['path_method']: 'cubic'; one"),
        (_path(CGAN, 3), "inputs['label']: none; a path takes one class: [1]"),
        (_labelled(_path(CGAN, 3), [1, 2, 3]), "inputs['label']: shape [3]; a path takes one"),
        (_labelled(_path(CGAN, 3), [11]), "label: label 11 out of range"),
    ],
)
def test_bad_paths_over_oip_are_invalid_argument_naming_the_field(
    stub: oip_grpc.GRPCInferenceServiceStub, request_: oip.ModelInferRequest, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert words in info.value.details()
