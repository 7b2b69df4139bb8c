"""Calls a ganserve server with the stock `tritonclient[grpc]`; prints what came back as JSON.

    python tests/server/triton_calls.py ADDRESS        # the calls below
    python tests/server/triton_calls.py --descriptors  # tritonclient's message layouts
    python tests/server/triton_calls.py --control ADDRESS  # unload and load (explicit mode)

Run in its own process by tests/server/test_oip.py: tritonclient's generated code defines the
same `inference.*` protobuf symbols as ganserve's, and one process cannot hold both.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import numpy as np


def layout(file: Any, service: str = "GRPCInferenceService") -> dict[str, list[list[Any]]]:
    """Every message of a proto file, nested ones as Outer.Inner: [name, number, type] per
    field; and under "rpcs" the service's [name, input, output] per method."""
    out: dict[str, list[list[Any]]] = {}

    def walk(message: Any, prefix: str) -> None:
        name = prefix + message.name
        out[name] = [[f.name, f.number, f.type] for f in message.fields]
        for nested in message.nested_types:
            walk(nested, name + ".")

    for message in file.message_types_by_name.values():
        walk(message, "")
    methods = file.services_by_name[service].methods
    out["rpcs"] = [[m.name, m.input_type.name, m.output_type.name] for m in methods]
    return out


def descriptors() -> dict[str, list[list[Any]]]:
    """tritonclient's grpc_service.proto, laid out."""
    from tritonclient.grpc import service_pb2

    return layout(service_pb2.DESCRIPTOR)


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def calls(address: str) -> dict[str, Any]:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(address)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("mnist-dcgan"),
        "server": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata("mnist-cgan", as_json=True),
        "index": client.get_model_repository_index(as_json=True),
    }
    # latents sent by the caller, and a conditional model's labels
    z = np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32)
    given = tc.InferInput("z", list(z.shape), "FP32")
    given.set_data_from_numpy(z)
    result = client.infer("mnist-dcgan", [given], outputs=[tc.InferRequestedOutput("image_out")])
    out["z_shape"] = list(result.as_numpy("image_out").shape)
    out["z_digest"] = digest(result.as_numpy("image_out"))
    # latents made on the server from seed parameters
    result = client.infer(
        "mnist-dcgan", [], parameters={"seed": 7, "start_index": 5, "count": 4}, model_version="1"
    )
    out["seed_shape"] = list(result.as_numpy("image_out").shape)
    out["seed_digest"] = digest(result.as_numpy("image_out"))
    label = tc.InferInput("label", [4], "INT64")
    label.set_data_from_numpy(np.array([3, 1, 4, 1], np.int64))
    result = client.infer("mnist-cgan", [label], parameters={"seed": 9})
    out["cgan_digest"] = digest(result.as_numpy("image_out"))
    image = tc.InferInput("image", [2, 32, 32, 1], "UINT8")
    image.set_data_from_numpy(np.full((2, 32, 32, 1), 255, np.uint8))
    out["translate_shape"] = list(
        client.infer("mnist-edges2digits", [image]).as_numpy("image_out").shape
    )
    errors = {}
    for what, call in {
        "unknown_model": lambda: client.infer("no-such-model", [given]),
        "bad_datatype": lambda: client.infer("mnist-dcgan", [tc.InferInput("z", [1, 100], "FP64")]),
        "load": lambda: client.load_model("mnist-dcgan"),
        "unload": lambda: client.unload_model("mnist-dcgan"),
    }.items():
        try:
            call()
            errors[what] = "OK"
        except InferenceServerException as exc:
            errors[what] = exc.status()
    out["errors"] = errors
    client.close()
    return out


def control(address: str) -> dict[str, Any]:
    """Model control through tritonclient, against a server run with --model-control explicit."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(address)
    out = {"before": client.is_model_ready("mnist-cgan")}
    client.unload_model("mnist-cgan")
    out["unloaded"] = client.is_model_ready("mnist-cgan")
    out["index"] = client.get_model_repository_index(as_json=True)
    client.load_model("mnist-cgan")
    out["loaded"] = client.is_model_ready("mnist-cgan")
    client.close()
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--descriptors":
        result = descriptors()
    elif sys.argv[1] == "--control":
        result = control(sys.argv[2])
    else:
        result = calls(sys.argv[1])
    print(json.dumps(result))
