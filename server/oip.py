"""The Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`) on ganserve's port.

One implementation serves both protocols: ModelInfer turns its request into the ganserve.v1
request it means (SampleRequest, GenerateRequest or TranslateRequest) and runs it through the
same GeneratorService path: the same validation, limits, batcher, determinism and metrics
(method label "ModelInfer"). What is left here is the translation of tensors and parameters.

- inputs by name, as `raw_input_contents` or typed `contents`: `z` FP32 [N, nz], `label`
  INT64 or UINT8 [N] (conditional models), `image` UINT8 [N, H, W, C] (translation models);
  any other datatype is INVALID_ARGUMENT naming the input;
- request parameters `seed`, `start_index`, `count` (int64_param, uint64_param, or a string of
  ASCII digits): a generator asked without `z` makes image i of seed s from the same latent as
  ganserve.v1 does, so the bytes agree across protocols;
- versions: "" (the latest) or ASCII digits, 1 to 2^63 - 1 (`ganserve.contract.parse_version`);
- the one output, `image_out` UINT8 [N, H, W, C], as `raw_output_contents`.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
import numpy as np

from ganserve.contract import parse_version
from ganserve.export.metadata import ModelCard, TensorSpec
from ganserve.export.repository import RepositoryError
from ganserve.oip import grpc_service_pb2 as oip
from ganserve.server.models import ModelNotFound, ModelUnavailable, ModelVersion, shown
from ganserve.server.service import Abort, GeneratorService, invalid
from ganserve.v1 import ganserve_pb2 as pb

SERVER_NAME = "ganserve"
SERVER_VERSION = "0.1.0"
OUTPUT = "image_out"
# OIP datatypes of the inputs ganserve models take, and their numpy types
DATATYPES = {"FP32": np.float32, "INT64": np.int64, "UINT8": np.uint8}
DATATYPE_OF = {"float32": "FP32", "int64": "INT64", "uint8": "UINT8"}
# which typed `contents` field carries each datatype
CONTENTS = {"FP32": "fp32_contents", "INT64": "int64_contents", "UINT8": "uint_contents"}
STATE = {"ready": "READY", "loading": "LOADING", "failed": "UNAVAILABLE", "unloaded": "UNAVAILABLE"}


def _version(text: str, field: str) -> int:
    """OIP versions are strings: "" for the latest, else a version number (one rule:
    `ganserve.contract.parse_version`)."""
    if not text:
        return 0
    version = parse_version(text)
    if version is None:
        raise invalid(
            f"{field}: {shown(text)}; a version number 1 to 2^63 - 1 in ASCII digits, "
            "or empty for the latest"
        )
    return version


_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII: int() and str.isdigit() also take '²' and '٣'


def _parameter(request: oip.ModelInferRequest, name: str) -> int | None:
    """An integer request parameter (int64, uint64, or a string of ASCII digits), or None when
    absent. Its range is the caller's to check."""
    if name not in request.parameters:
        return None
    value = request.parameters[name]
    which = value.WhichOneof("parameter_choice")
    if which in ("int64_param", "uint64_param"):
        return int(getattr(value, which))
    if which == "string_param" and _DIGITS.fullmatch(value.string_param):
        return int(value.string_param)
    given = shown(value.string_param) if which == "string_param" else which or "empty"
    raise invalid(
        f"parameters[{name!r}]: {given}; an integer (int64_param, uint64_param, "
        "or a string of up to 20 ASCII digits)"
    )


def _uint64(value: int | None, field: str) -> int:
    if value is not None and not 0 <= value < 2**64:
        raise invalid(f"{field}: {value}; 0 to 2^64 - 1")
    return value or 0


def _inputs(request: oip.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's input tensors by name, checked against their datatype and shape."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs")
    arrays = {}
    for i, tensor in enumerate(request.inputs):
        field = f"inputs[{tensor.name!r}]"
        if tensor.datatype not in DATATYPES:
            raise invalid(f"{field}: datatype {tensor.datatype!r}; one of {', '.join(DATATYPES)}")
        dtype = np.dtype(DATATYPES[tensor.datatype])
        shape = [int(d) for d in tensor.shape]
        if not shape or any(d < 0 for d in shape):
            raise invalid(f"{field}: shape {shape}; every dimension must be given")
        size = int(np.prod(shape, dtype=object))
        if raw:
            if tensor.HasField("contents"):
                raise invalid(f"{field}: contents and raw_input_contents both given")
            if len(raw[i]) != size * dtype.itemsize:
                raise invalid(
                    f"{field}: {len(raw[i])} raw bytes for shape {shape} of {tensor.datatype} "
                    f"(needs {size * dtype.itemsize})"
                )
            array = np.frombuffer(raw[i], dtype)
        else:
            values = getattr(tensor.contents, CONTENTS[tensor.datatype])
            if len(values) != size:
                raise invalid(f"{field}: {len(values)} contents for shape {shape}")
            array = np.asarray(values, np.float64 if dtype == np.float32 else np.int64)
            if dtype == np.uint8 and len(array) and (array.min() < 0 or array.max() > 255):
                raise invalid(f"{field}: UINT8 contents out of 0-255")
            array = array.astype(dtype)
        if tensor.name in arrays:
            raise invalid(f"{field}: given twice")
        arrays[tensor.name] = array.reshape(shape)
    return arrays


def datatypes(spec: TensorSpec) -> tuple[str, ...]:
    """The OIP datatypes input `spec` accepts, the one ModelMetadata states first: `image` is
    UINT8 pixels whatever the graph takes (the server converts); a `label` may also be UINT8,
    on purpose, since class numbers fit in a byte; otherwise the graph's own type."""
    if spec.name == "image":
        return ("UINT8",)
    if spec.name == "label":
        return ("INT64", "UINT8")
    return (DATATYPE_OF.get(spec.dtype, spec.dtype.upper()),)


def _tensor(array: np.ndarray) -> pb.Tensor:
    return pb.Tensor(dtype=array.dtype.name, shape=list(array.shape), data=array.tobytes())


class InferenceService:
    """`inference.GRPCInferenceService` over a GeneratorService (registered with its metrics and
    error mapping by `server.service.add_to_server`)."""

    def __init__(self, service: GeneratorService) -> None:
        self.service = service
        self.repo = service.repo
        self.metrics = service.metrics

    async def ServerLive(self, request: oip.ServerLiveRequest, context: Any) -> Any:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest, context: Any) -> Any:
        return oip.ServerReadyResponse(ready=self.repo.any_ready and not self.service.draining)

    async def ServerMetadata(self, request: oip.ServerMetadataRequest, context: Any) -> Any:
        return oip.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=["model_repository"]
        )

    def _get(self, name: str, version: str, field: str = "version") -> ModelVersion:
        if not name:
            raise invalid("name: required (RepositoryIndex lists the models)")
        try:
            return self.repo.get(name, _version(version, field))
        except ModelNotFound as exc:
            raise Abort(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except ModelUnavailable as exc:
            raise Abort(grpc.StatusCode.UNAVAILABLE, str(exc)) from None

    async def ModelReady(self, request: oip.ModelReadyRequest, context: Any) -> Any:
        try:
            self._get(request.name, request.version)
        except Abort as exc:
            if exc.code == grpc.StatusCode.UNAVAILABLE:
                return oip.ModelReadyResponse(ready=False)
            raise
        return oip.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context: Any) -> Any:
        mv = self._get(request.name, request.version)
        card = mv.card
        assert card is not None
        ready = [v for v, m in sorted(self.repo.models[mv.name].items()) if m.state == "ready"]
        reply = oip.ModelMetadataResponse(
            name=mv.name, versions=[str(v) for v in ready], platform="onnxruntime_onnx"
        )
        for spec in card.inputs:
            datatype = datatypes(spec)[0]
            shape = [-1, -1, -1, card.channels] if spec.name == "image" else spec.shape
            reply.inputs.add(name=spec.name, datatype=datatype, shape=[-1, *shape[1:]])
        out = [-1, -1, -1, card.channels]
        if card.kind != "translation":
            out = [-1, card.height, card.width, card.channels]
        reply.outputs.add(name=OUTPUT, datatype="UINT8", shape=out)
        return reply

    def _request(self, request: oip.ModelInferRequest, card: ModelCard, version: int) -> Any:
        """The ganserve.v1 request a ModelInfer call means."""
        inputs = _inputs(request)
        known = {s.name for s in card.inputs}
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise invalid(f"inputs: {unknown[0]!r} is not an input of this model ({sorted(known)})")
        for spec in card.inputs:
            given = inputs.get(spec.name)
            allowed = datatypes(spec)
            if given is not None and DATATYPE_OF[given.dtype.name] not in allowed:
                raise invalid(
                    f"inputs[{spec.name!r}]: datatype {DATATYPE_OF[given.dtype.name]}; "
                    f"{' or '.join(allowed)}"
                )
        for out in request.outputs:
            if out.name != OUTPUT:
                raise invalid(f"outputs: {out.name!r}; this model's one output is {OUTPUT!r}")
        common = {"model": request.model_name, "version": version, "encoding": pb.RAW_UINT8}
        if card.kind == "translation":
            if "image" not in inputs:
                raise invalid("inputs: 'image' (UINT8 [N, H, W, C]) is required")
            return pb.TranslateRequest(images=_tensor(inputs["image"]), **common)
        seed, start, count = (_parameter(request, p) for p in ("seed", "start_index", "count"))
        fields: dict[str, Any] = {
            "seed": _uint64(seed, "parameters['seed']"),
            "start_index": _uint64(start, "parameters['start_index']"),
        }
        if "z" in inputs:
            if seed is not None or count is not None:
                raise invalid("inputs: give 'z', or parameters seed and count, not both")
            fields["latents"] = _tensor(inputs["z"])
        elif count is not None:
            # the request layer's own count rule, before the value must fit the wire's uint64
            self.service._check_count(count, stream=False, field="parameters['count']")
            fields["count"] = count
        elif "label" not in inputs:
            raise invalid("inputs: 'z' (FP32 [N, nz]) or parameters seed and count are required")
        if card.kind != "conditional":
            return pb.SampleRequest(**fields, **common)
        if "label" not in inputs:
            raise invalid("inputs: 'label' (INT64 [N]) is required by a conditional model")
        labels = inputs["label"]
        if labels.ndim != 1:
            raise invalid(f"inputs['label']: shape {list(labels.shape)}; must be [N]")
        return pb.GenerateRequest(labels=pb.LabelList(values=labels.tolist()), **fields, **common)

    async def ModelInfer(self, request: oip.ModelInferRequest, context: Any) -> Any:
        mv = self._get(request.model_name, request.model_version, "model_version")
        assert mv.card is not None
        v1 = self._request(request, mv.card, mv.version)
        if isinstance(v1, pb.TranslateRequest):
            batch = await self.service._translate(v1, "ModelInfer")
        else:
            batch = await self.service._unary(v1, "ModelInfer")
        reply = oip.ModelInferResponse(
            model_name=batch.model, model_version=str(batch.version), id=request.id
        )
        reply.outputs.add(name=OUTPUT, datatype="UINT8", shape=list(batch.images.shape))
        reply.raw_output_contents.append(batch.images.data)
        return reply

    async def RepositoryIndex(self, request: oip.RepositoryIndexRequest, context: Any) -> Any:
        reply = oip.RepositoryIndexResponse()
        for name in sorted(self.repo.models):
            for version, mv in sorted(self.repo.models[name].items()):
                if request.ready and mv.state != "ready":
                    continue
                reply.models.add(
                    name=name, version=str(version), state=STATE[mv.state], reason=mv.error
                )
        return reply

    def _explicit(self, name: str, what: str) -> None:
        if self.service.config.model_control != "explicit":
            raise Abort(
                grpc.StatusCode.UNAVAILABLE,
                f"model {shown(name)}: {what} models on request needs --model-control explicit",
            )
        if not name:
            raise invalid("model_name: required")

    async def RepositoryModelLoad(
        self, request: oip.RepositoryModelLoadRequest, context: Any
    ) -> Any:
        """Load (or reload) a model from the repository folder, as its version policy says."""
        name = request.model_name
        self._explicit(name, "loading")
        try:
            on_disk = self.repo.names_on_disk()
        except RepositoryError as exc:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, f"model repository: {exc}") from None
        if name not in on_disk:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"model: no model {shown(name)} on disk")
        await self.repo.sync(name, retry=True)  # a load on request tries failed ones again
        found = self.repo.models.get(name, {})
        if not any(mv.state == "ready" for mv in found.values()):
            errors = "; ".join(f"{v}: {mv.error}" for v, mv in sorted(found.items()))
            raise Abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"model {name!r}: no version loaded ({errors})"
            )
        return oip.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: oip.RepositoryModelUnloadRequest, context: Any
    ) -> Any:
        """Stop serving every version of a model; calls in flight finish first."""
        name = request.model_name
        self._explicit(name, "unloading")
        if name not in self.repo.models:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"model: no model {shown(name)} loaded")
        await self.repo.unload(name)
        return oip.RepositoryModelUnloadResponse()
