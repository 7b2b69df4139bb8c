"""The Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`) on ganserve's port.

A transport over the request layer (`server.core`), as `server.v1` is: ModelInfer turns its
tensors and parameters into the layer's values (a Generation, or a translation's source pixels)
and runs them on the same path as ganserve.v1: the same validation, limits, batcher,
determinism and metrics (method label "ModelInfer"). What is left here is the OIP's wire.

- inputs by name, as `raw_input_contents` or typed `contents`: `z` FP32 [N, nz], `label`
  INT64 or UINT8 [N] (conditional models), `image` UINT8 [N, H, W, C] (translation models)
  and `mask` UINT8 [N, H, W, 1] (inpainting models: 0 keep, 255 fill);
  any other datatype is INVALID_ARGUMENT naming the input;
- request parameters `seed`, `start_index`, `count` (int64_param, uint64_param, or a string of
  ASCII digits): a generator asked without `z` makes image i of seed s from the same latent as
  ganserve.v1 does, so the bytes agree across protocols;
- a path through the latent space (ganserve.v1's Interpolate): parameter `path_steps` N >= 2
  makes N images from one end to the other, the ends being the rows of `z` FP32 [2, nz] or
  the images (`seed`, `start_index`) and (`path_end_seed`, default `seed`; `path_end_index`),
  along `path_method` "spherical" (the default) or "linear"; a conditional model takes one
  `label` [1] for the whole path;
- versions: "" (the latest) or ASCII digits, 1 to 2^63 - 1 (`ganserve.contract.parse_version`);
- the one output, `image_out` UINT8 [N, H, W, C], as `raw_output_contents`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ganserve.contract import parse_version
from ganserve.export.metadata import ModelCard, TensorSpec
from ganserve.export.repository import RepositoryError
from ganserve.latent import PATH_METHODS
from ganserve.oip import grpc_service_pb2 as oip
from ganserve.server import tracing
from ganserve.server.core import Core, Feeds, Generation, Path
from ganserve.server.errors import (
    Draining,
    InvalidRequest,
    ModelControlOff,
    ModelNotFound,
    ModelUnavailable,
    NotLoadable,
)
from ganserve.server.images import pixels
from ganserve.server.models import Lease, State, shown

SERVER_NAME = "ganserve"
SERVER_VERSION = "0.1.0"
OUTPUT = "image_out"
# OIP datatypes of the inputs ganserve models take, and their numpy types
DATATYPES = {"FP32": np.float32, "INT64": np.int64, "UINT8": np.uint8}
DATATYPE_OF = {"float32": "FP32", "int64": "INT64", "uint8": "UINT8"}
# which typed `contents` field carries each datatype
CONTENTS = {"FP32": "fp32_contents", "INT64": "int64_contents", "UINT8": "uint_contents"}
STATE = {
    State.READY: "READY",
    State.LOADING: "LOADING",
    State.FAILED: "UNAVAILABLE",
    State.UNLOADED: "UNAVAILABLE",
}


def _version(text: str, field: str) -> int:
    """OIP versions are strings: "" for the latest, else a version number (one rule:
    `ganserve.contract.parse_version`)."""
    if not text:
        return 0
    version = parse_version(text)
    if version is None:
        raise InvalidRequest(
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
    raise InvalidRequest(
        f"parameters[{name!r}]: {given}; an integer (int64_param, uint64_param, "
        "or a string of up to 20 ASCII digits)"
    )


def _text_parameter(request: oip.ModelInferRequest, name: str, allowed: tuple[str, ...]) -> str:
    """A string request parameter that must be one of `allowed` (the first when absent)."""
    if name not in request.parameters:
        return allowed[0]
    value = request.parameters[name]
    if value.WhichOneof("parameter_choice") != "string_param" or value.string_param not in allowed:
        given = shown(value.string_param) if value.string_param else "not a string"
        raise InvalidRequest(f"parameters[{name!r}]: {given}; one of {', '.join(allowed)}")
    return value.string_param


def _uint64(value: int | None, field: str) -> int:
    if value is not None and not 0 <= value < 2**64:
        raise InvalidRequest(f"{field}: {value}; 0 to 2^64 - 1")
    return value or 0


def _inputs(request: oip.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's input tensors by name, checked against their datatype and shape."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs"
        )
    arrays = {}
    for i, tensor in enumerate(request.inputs):
        field = f"inputs[{tensor.name!r}]"
        if tensor.datatype not in DATATYPES:
            raise InvalidRequest(
                f"{field}: datatype {tensor.datatype!r}; one of {', '.join(DATATYPES)}"
            )
        dtype = np.dtype(DATATYPES[tensor.datatype])
        shape = [int(d) for d in tensor.shape]
        if not shape or any(d < 0 for d in shape):
            raise InvalidRequest(f"{field}: shape {shape}; every dimension must be given")
        size = int(np.prod(shape, dtype=object))
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(f"{field}: contents and raw_input_contents both given")
            if len(raw[i]) != size * dtype.itemsize:
                raise InvalidRequest(
                    f"{field}: {len(raw[i])} raw bytes for shape {shape} of {tensor.datatype} "
                    f"(needs {size * dtype.itemsize})"
                )
            array = np.frombuffer(raw[i], dtype)
        else:
            values = getattr(tensor.contents, CONTENTS[tensor.datatype])
            if len(values) != size:
                raise InvalidRequest(f"{field}: {len(values)} contents for shape {shape}")
            array = np.asarray(values, np.float64 if dtype == np.float32 else np.int64)
            if dtype == np.uint8 and len(array) and (array.min() < 0 or array.max() > 255):
                raise InvalidRequest(f"{field}: UINT8 contents out of 0-255")
            array = array.astype(dtype)
        if tensor.name in arrays:
            raise InvalidRequest(f"{field}: given twice")
        arrays[tensor.name] = array.reshape(shape)
    return arrays


def datatypes(spec: TensorSpec) -> tuple[str, ...]:
    """The OIP datatypes input `spec` accepts, the one ModelMetadata states first: `image` and
    `mask` are UINT8 pixels whatever the graph takes (the server converts); a `label` may also
    be UINT8, on purpose, since class numbers fit in a byte; otherwise the graph's own type."""
    if spec.name in ("image", "mask"):
        return ("UINT8",)
    if spec.name == "label":
        return ("INT64", "UINT8")
    return (DATATYPE_OF.get(spec.dtype, spec.dtype.upper()),)


class InferenceService:
    """`inference.GRPCInferenceService` over the request layer (registered with its metrics and
    error mapping by `server.rpc.register`)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.repo = core.repo

    async def ServerLive(self, request: oip.ServerLiveRequest, context: Any) -> Any:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest, context: Any) -> Any:
        return oip.ServerReadyResponse(ready=self.core.ready)

    async def ServerMetadata(self, request: oip.ServerMetadataRequest, context: Any) -> Any:
        return oip.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=["model_repository"]
        )

    def _lease(self, name: str, version: str, field: str = "version") -> Lease:
        return self.core.lease(name, _version(version, field), field="name")

    async def ModelReady(self, request: oip.ModelReadyRequest, context: Any) -> Any:
        try:
            async with self._lease(request.name, request.version):
                return oip.ModelReadyResponse(ready=True)
        except (ModelUnavailable, Draining):
            return oip.ModelReadyResponse(ready=False)

    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context: Any) -> Any:
        async with self._lease(request.name, request.version) as mv:
            card = mv.card
            assert card is not None
            ready = self.repo.ready_versions(mv.name)
            reply = oip.ModelMetadataResponse(
                name=mv.name, versions=[str(m.version) for m in ready], platform="onnxruntime_onnx"
            )
            for spec in card.inputs:
                datatype = datatypes(spec)[0]
                shape = spec.shape
                if spec.name in ("image", "mask"):  # uint8 NHWC on the wire, whatever the graph
                    shape = [-1, -1, -1, card.channels if spec.name == "image" else 1]
                reply.inputs.add(name=spec.name, datatype=datatype, shape=[-1, *shape[1:]])
            out = [-1, -1, -1, card.channels]
            if card.kind != "translation":
                out = [-1, card.height, card.width, card.channels]
            reply.outputs.add(name=OUTPUT, datatype="UINT8", shape=out)
            return reply

    def _checked_inputs(self, request: oip.ModelInferRequest, card: ModelCard) -> Feeds:
        """The request's inputs, each one this model takes in a datatype it accepts."""
        inputs = _inputs(request)
        known = {s.name for s in card.inputs}
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise InvalidRequest(
                f"inputs: {unknown[0]!r} is not an input of this model ({sorted(known)})"
            )
        for spec in card.inputs:
            given = inputs.get(spec.name)
            allowed = datatypes(spec)
            if given is not None and DATATYPE_OF[given.dtype.name] not in allowed:
                raise InvalidRequest(
                    f"inputs[{spec.name!r}]: datatype {DATATYPE_OF[given.dtype.name]}; "
                    f"{' or '.join(allowed)}"
                )
        for out in request.outputs:
            if out.name != OUTPUT:
                raise InvalidRequest(
                    f"outputs: {out.name!r}; this model's one output is {OUTPUT!r}"
                )
        return inputs

    def _path(self, request: oip.ModelInferRequest, card: ModelCard, inputs: Feeds) -> Any:
        """The Generation of a ModelInfer call with parameter `path_steps` (Interpolate's)."""
        names = ("path_steps", "seed", "start_index", "path_end_seed", "path_end_index", "count")
        steps, seed, start, end_seed, end_index, count = (_parameter(request, p) for p in names)
        assert steps is not None
        if count is not None:
            raise InvalidRequest("parameters: give path_steps or count, not both")
        self.core.check_count(steps, stream=False, field="parameters['path_steps']")
        method = _text_parameter(request, "path_method", PATH_METHODS)
        if "z" in inputs:
            if any(p is not None for p in (seed, start, end_seed, end_index)):
                raise InvalidRequest("inputs: give 'z' (the two ends) or seeds, not both")
            z = inputs["z"]
            if z.ndim != 2 or len(z) != 2:
                raise InvalidRequest(f"inputs['z']: shape {list(z.shape)}; a path's ends: [2, nz]")
            ends: tuple[Any, Any] = (z[0], z[1])
        else:
            first = _uint64(seed, "parameters['seed']")
            ends = (
                (first, _uint64(start, "parameters['start_index']")),
                (
                    _uint64(first if end_seed is None else end_seed, "parameters['path_end_seed']"),
                    _uint64(end_index, "parameters['path_end_index']"),
                ),
            )
        g = Generation(path=Path(ends[0], ends[1], steps, method))
        if card.kind != "conditional":
            return g  # (a 'label' input was refused with the model's other unknown inputs)
        labels = inputs.get("label")
        if labels is None or labels.shape != (1,):
            shape = "none" if labels is None else f"shape {list(labels.shape)}"
            raise InvalidRequest(f"inputs['label']: {shape}; a path takes one class: [1]")
        g.condition, g.label = "label", int(labels[0])
        return g

    def _generation(self, request: oip.ModelInferRequest, card: ModelCard, inputs: Feeds) -> Any:
        """The request layer's Generation a ModelInfer call on a generator means."""
        if "path_steps" in request.parameters:
            return self._path(request, card, inputs)
        seed, start, count = (_parameter(request, p) for p in ("seed", "start_index", "count"))
        g = Generation(
            seed=_uint64(seed, "parameters['seed']"),
            start_index=_uint64(start, "parameters['start_index']"),
        )
        if "z" in inputs:
            if seed is not None or count is not None:
                raise InvalidRequest("inputs: give 'z', or parameters seed and count, not both")
            g.latents = inputs["z"]
        elif count is not None:
            self.core.check_count(count, stream=False, field="parameters['count']")
            g.count = count
        elif "label" not in inputs:
            raise InvalidRequest(
                "inputs: 'z' (FP32 [N, nz]) or parameters seed and count are required"
            )
        if card.kind != "conditional":
            return g
        if "label" not in inputs:
            raise InvalidRequest("inputs: 'label' (INT64 [N]) is required by a conditional model")
        labels = inputs["label"]
        if labels.ndim != 1:
            raise InvalidRequest(f"inputs['label']: shape {list(labels.shape)}; must be [N]")
        g.condition, g.labels = "labels", labels.astype(np.int64)
        return g

    async def ModelInfer(self, request: oip.ModelInferRequest, context: Any) -> Any:
        lease = self._lease(request.model_name, request.model_version, "model_version")
        async with lease as mv:
            card = mv.card
            assert card is not None
            inputs = self._checked_inputs(request, card)
            if card.kind == "translation":
                if "image" not in inputs:
                    raise InvalidRequest("inputs: 'image' (UINT8 [N, H, W, C]) is required")
                images = inputs["image"]
                self.core.check_images(card, images)
                n, h, w, _ = images.shape
                self.core.check_reply_size(card, n, *card.output_size(h, w), 1)
                feeds = await self.core.translation_feeds(mv, images, inputs.get("mask"))
                out = await self.core.run(mv, feeds)
            else:
                plan = self.core.plan(mv, self._generation(request, card, inputs), stream=False)
                self.core.check_reply_size(card, plan.count, card.height, card.width, 1)
                out = await self.core.run(mv, plan.inputs(0, plan.count))
            with tracing.span("encode", **{"ganserve.encoding": "RAW_UINT8"}):
                images = pixels(card, out)
                self.core.metrics.images_of(mv.name, "ModelInfer").inc(len(images))
                reply = oip.ModelInferResponse(
                    model_name=mv.name, model_version=str(mv.version), id=request.id
                )
                reply.outputs.add(name=OUTPUT, datatype="UINT8", shape=list(images.shape))
                reply.raw_output_contents.append(np.ascontiguousarray(images).tobytes())
            return reply

    async def RepositoryIndex(self, request: oip.RepositoryIndexRequest, context: Any) -> Any:
        reply = oip.RepositoryIndexResponse()
        for name in sorted(self.repo.models):
            for version, mv in sorted(self.repo.models[name].items()):
                if request.ready and not mv.ready:
                    continue
                reply.models.add(
                    name=name, version=str(version), state=STATE[mv.state], reason=mv.error
                )
        return reply

    def _explicit(self, name: str, what: str) -> None:
        if self.core.config.model_control != "explicit":
            raise ModelControlOff(
                f"model {shown(name)}: {what} models on request needs --model-control explicit"
            )
        if not name:
            raise InvalidRequest("model_name: required")

    async def RepositoryModelLoad(
        self, request: oip.RepositoryModelLoadRequest, context: Any
    ) -> Any:
        """Load (or reload) a model from the repository folder, as its version policy says."""
        name = request.model_name
        self._explicit(name, "loading")
        try:
            on_disk = self.repo.names_on_disk()
        except RepositoryError as exc:
            raise NotLoadable(f"model repository: {exc}") from None
        if name not in on_disk:
            raise ModelNotFound(f"model: no model {shown(name)} on disk")
        await self.repo.sync(name, retry=True)  # a load on request tries failed ones again
        if not self.repo.ready_versions(name):
            found = self.repo.models.get(name, {})
            errors = "; ".join(f"{v}: {mv.error}" for v, mv in sorted(found.items()))
            raise NotLoadable(f"model {name!r}: no version loaded ({errors})")
        return oip.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: oip.RepositoryModelUnloadRequest, context: Any
    ) -> Any:
        """Stop serving every version of a model; calls in flight finish first."""
        name = request.model_name
        self._explicit(name, "unloading")
        if name not in self.repo.models:
            raise ModelNotFound(f"model: no model {shown(name)} loaded")
        await self.repo.unload(name)
        return oip.RepositoryModelUnloadResponse()
