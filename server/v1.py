"""The ganserve.v1.Generator transport: its messages parsed into the request layer's values
(`server.core`), and the layer's output encoded as its replies (raw uint8, raw float32, PNG)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from ganserve.latent import PATH_METHODS
from ganserve.server import tracing
from ganserve.server.core import Core, Generation, Path, Plan
from ganserve.server.errors import InvalidRequest, ModelNotFound, ModelUnavailable, WrongKind
from ganserve.server.images import encode_pngs, float_pixels, pixels
from ganserve.server.models import ModelVersion, shown
from ganserve.server.rpc import parsed
from ganserve.tensor import fill_tensor, from_tensor
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc

OFF_LOOP_LABELS = 1 << 16  # longer label lists are converted on the request pool
_RPC_OF_KIND = {"unconditional": "Sample", "conditional": "Generate", "translation": "Translate"}
# the kinds each rpc and its stream serve: one, but Interpolate serves both generators
_KINDS_OF_RPC = {rpc + s: {kind} for kind, rpc in _RPC_OF_KIND.items() for s in ("", "Stream")}
_KINDS_OF_RPC |= {"Interpolate" + s: {"unconditional", "conditional"} for s in ("", "Stream")}
# Interpolate's wire methods and ganserve.latent's names for them (unspecified: the first)
_METHODS = {pb.InterpolateRequest.Method.Value(m.upper()): m for m in PATH_METHODS}
_METHODS[pb.InterpolateRequest.METHOD_UNSPECIFIED] = PATH_METHODS[0]
_ENCODINGS = (pb.ENCODING_UNSPECIFIED, pb.RAW_UINT8, pb.RAW_FLOAT32, pb.PNG)


def tensor_to_array(tensor: pb.Tensor, field: str) -> np.ndarray:
    """A wire Tensor as an array; INVALID_ARGUMENT naming `field` when it is malformed."""
    try:
        return from_tensor(tensor, field)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _itemsize(encoding: int) -> int:
    if encoding not in _ENCODINGS:
        raise InvalidRequest(f"encoding: {encoding}; one of RAW_UINT8, RAW_FLOAT32, PNG")
    return 4 if encoding == pb.RAW_FLOAT32 else 1


class GeneratorService(pb_grpc.GeneratorServicer):
    """Every rpc of ganserve.v1.Generator over the request layer."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.repo = core.repo

    def _kind(self, mv: ModelVersion, method: str) -> None:
        assert mv.card is not None
        if mv.card.kind not in _KINDS_OF_RPC[method]:
            wanted = _RPC_OF_KIND[mv.card.kind]
            raise WrongKind(f"model: {mv.name!r} is {mv.card.kind}; call {wanted}, not {method}")

    async def _generation(self, request: Any) -> Generation:
        """The request layer's Generation for a SampleRequest, GenerateRequest or
        InterpolateRequest."""
        if isinstance(request, pb.InterpolateRequest):
            return self._interpolation(request)
        g = Generation(
            seed=request.seed,
            start_index=request.start_index,
            count=request.count,
            truncation=request.truncation,
        )
        if request.HasField("latents"):
            g.latents = tensor_to_array(request.latents, "latents")
        if isinstance(request, pb.GenerateRequest):
            g.condition = request.WhichOneof("condition")
            g.label, g.balanced = request.label, request.balanced
            if g.condition == "labels":
                values = request.labels.values
                if len(values) > OFF_LOOP_LABELS:  # millions of labels take seconds to convert
                    g.labels = await self.core.off_loop(_labels_array, request.labels)
                else:
                    g.labels = np.asarray(values, np.int64)
        return g

    def _interpolation(self, request: pb.InterpolateRequest) -> Generation:
        if request.method not in _METHODS:
            raise InvalidRequest(f"method: {request.method}; SPHERICAL or LINEAR")
        ends = [_point(request, "start"), _point(request, "end")]
        path = Path(ends[0], ends[1], request.steps, _METHODS[request.method])
        g = Generation(start_index=request.start_index, path=path, truncation=request.truncation)
        if request.HasField("label"):
            g.condition, g.label = "label", request.label
        return g

    async def _reply(
        self, mv: ModelVersion, method: str, out: np.ndarray, encoding: int, start: int = 0,
        labels: np.ndarray | None = None,
    ) -> pb.ImageBatch:  # fmt: skip
        """The message for generator output `out` (uint8 NHWC, or float NCHW in [-1, 1])."""
        card = mv.card
        assert card is not None
        self.core.metrics.images_of(mv.name, method).inc(len(out))
        reply = pb.ImageBatch(model=mv.name, version=mv.version, start_index=start, layout="NHWC")
        if labels is not None:
            reply.labels.extend(labels.tolist())
        with tracing.span("encode", **{"ganserve.encoding": pb.Encoding.Name(encoding)}):
            if encoding == pb.RAW_FLOAT32:
                fill_tensor(reply.images, float_pixels(card, out))
            elif encoding == pb.PNG:
                reply.png.extend(await self.core.off_loop(encode_pngs, pixels(card, out)))
            else:
                fill_tensor(reply.images, pixels(card, out))
        return reply

    # -- rpcs -------------------------------------------------------------------------------

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[self._info(name, 0) for name in sorted(self.repo.models)]
        )

    async def DescribeModel(self, request: pb.DescribeModelRequest, context: Any) -> pb.ModelInfo:
        if request.model not in self.repo.models:
            raise ModelNotFound(f"model: no model {shown(request.model)}")
        if request.version and request.version not in self.repo.models[request.model]:
            raise ModelNotFound(
                f"version: model {request.model!r} has no version {request.version}"
            )
        return self._info(request.model, request.version)

    def _info(self, name: str, version: int) -> pb.ModelInfo:
        found = self.repo.models[name]
        limit = self.core.config.max_images_per_call
        info = pb.ModelInfo(name=name, max_images_per_call=limit)
        for v, mv in sorted(found.items()):
            state = pb.VersionState.State.Value(mv.state.upper())
            info.versions.add(version=v, state=state, error=mv.error)
        try:
            mv = self.repo.get(name, version)
        except (ModelNotFound, ModelUnavailable):
            return info  # no ready version: the states say why
        card = mv.card
        assert card is not None and mv.runners and mv.batcher is not None
        info.version = mv.version
        info.kind = card.kind
        info.latent_size = card.latent_size
        info.num_classes = card.num_classes
        info.class_names.extend(card.class_names)
        info.height, info.width, info.channels = card.height, card.width, card.channels
        info.size_multiple = card.size_multiple
        info.scale = card.scale
        info.masked = card.takes_mask
        info.max_batch_size = mv.batcher.max_batch_size
        info.execution_provider = mv.runners[0].provider
        info.metadata.update(card.to_props())
        return info

    async def _plan(self, mv: ModelVersion, request: Any, method: str, stream: bool) -> Plan:
        """The checked plan of a Sample/Generate/Interpolate request (its encoding too)."""
        self._kind(mv, method)
        _itemsize(request.encoding)
        g = await self._generation(request)
        return self.core.plan(mv, g, stream=stream)

    def _check_reply_size(self, mv: ModelVersion, n: int, encoding: int) -> None:
        card = mv.card
        assert card is not None
        self.core.check_reply_size(card, n, card.height, card.width, _itemsize(encoding))

    async def _unary(self, request: Any, method: str) -> pb.ImageBatch:
        async with self.core.lease(request.model, request.version) as mv:
            plan = await self._plan(mv, request, method, stream=False)
            self._check_reply_size(mv, plan.count, request.encoding)
            feeds = plan.inputs(0, plan.count)
            out = await self.core.run(mv, feeds)
            return await self._reply(
                mv, method, out, request.encoding, plan.start_index, feeds.get("label")
            )

    async def Sample(self, request: pb.SampleRequest, context: Any) -> pb.ImageBatch:
        return await self._unary(request, "Sample")

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.ImageBatch:
        return await self._unary(request, "Generate")

    async def _stream(self, request: Any, method: str) -> AsyncIterator[pb.ImageBatch]:
        async with self.core.lease(request.model, request.version) as mv:
            plan = await self._plan(mv, request, method, stream=True)
            chunk = self.core.chunk_size(request.chunk_size)
            self._check_reply_size(mv, min(chunk, plan.count), request.encoding)
            async for lo, feeds, out in self.core.stream(plan, chunk):
                start = plan.start_index + lo
                tracing.event(
                    "chunk", **{"ganserve.start_index": start, "ganserve.images": len(out)}
                )
                yield await self._reply(
                    mv, method, out, request.encoding, start, feeds.get("label")
                )

    def SampleStream(self, request: pb.SampleRequest, context: Any) -> AsyncIterator[pb.ImageBatch]:
        return self._stream(request, "SampleStream")

    def GenerateStream(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncIterator[pb.ImageBatch]:
        return self._stream(request, "GenerateStream")

    async def Interpolate(self, request: pb.InterpolateRequest, context: Any) -> pb.ImageBatch:
        return await self._unary(request, "Interpolate")

    def InterpolateStream(
        self, request: pb.InterpolateRequest, context: Any
    ) -> AsyncIterator[pb.ImageBatch]:
        return self._stream(request, "InterpolateStream")

    async def _translate(self, request: pb.TranslateRequest, method: str) -> pb.ImageBatch:
        async with self.core.lease(request.model, request.version) as mv:
            self._kind(mv, method)
            card = mv.card
            assert card is not None
            itemsize = _itemsize(request.encoding)
            if request.HasField("images") == bool(request.png):
                raise InvalidRequest("images, png: give exactly one of them")
            if request.png:
                images = await self.core.decode(card, list(request.png))
            else:
                images = tensor_to_array(request.images, "images")
                self.core.check_images(card, images)
            n, h, w, _ = images.shape
            self.core.check_reply_size(card, n, *card.output_size(h, w), itemsize)
            mask = tensor_to_array(request.mask, "mask") if request.HasField("mask") else None
            feeds = await self.core.translation_feeds(mv, images, mask, list(request.mask_png))
            out = await self.core.run(mv, feeds)
            return await self._reply(mv, method, out, request.encoding)

    async def Translate(self, request: pb.TranslateRequest, context: Any) -> pb.ImageBatch:
        return await self._translate(request, "Translate")

    async def TranslateStream(
        self, requests: AsyncIterator[pb.TranslateRequest], context: Any
    ) -> AsyncIterator[pb.ImageBatch]:
        async for request in requests:
            reply = await self._translate(parsed(request), "TranslateStream")
            tracing.event("chunk", **{"ganserve.images": len(reply.png) or reply.images.shape[0]})
            yield reply


def _point(request: pb.InterpolateRequest, field: str) -> tuple[int, int] | np.ndarray:
    """One end of the path: (seed, index), or its explicit latent as an array."""
    if not request.HasField(field):
        raise InvalidRequest(f"{field}: required (an image's seed and index, or a latent)")
    point = getattr(request, field)
    which = point.WhichOneof("point")
    if which is None:
        raise InvalidRequest(f"{field}: give image (seed and index) or latent")
    if which == "image":
        return (point.image.seed, point.image.index)
    return tensor_to_array(point.latent, f"{field}.latent")


def _labels_array(labels: pb.LabelList) -> np.ndarray:
    """A long label list as int64, decoded from its wire bytes with numpy. Converting the
    repeated field itself goes element by element holding the GIL (1.1 s for 20M labels on
    protobuf 6), which stalls the event loop even from a worker thread; numpy's loops let go
    of the GIL."""
    data = np.frombuffer(labels.SerializeToString(), np.uint8)
    if not len(data):
        return np.zeros(0, np.int64)
    start = 1  # after the tag of field 1 (packed), then the payload's length as a varint
    while data[start] & 0x80:
        start += 1
    data = data[start + 1 :]
    ends = np.flatnonzero(data < 0x80)  # the last byte of each varint
    if len(ends) == len(data):  # every label below 128: one byte each
        return data.astype(np.int64)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    place = np.arange(len(data)) - np.repeat(starts, ends - starts + 1)
    parts = (data & 0x7F).astype(np.uint64) << (7 * place).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts).view(np.int64)
