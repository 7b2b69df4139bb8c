"""The ganserve.v1.Generator service: validation, latents, batching, encoding, status codes."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import io
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError

from ganserve.contract import MAX_CHUNK_SIZE, balanced_labels, image_count
from ganserve.export.metadata import ModelCard
from ganserve.latent import MIN_TRUNCATION, latents
from ganserve.png import PngError, encode_png, png_header
from ganserve.server.batcher import Queued, QueueFull
from ganserve.server.config import ServerConfig
from ganserve.server.metrics import Metrics
from ganserve.server.models import (
    ModelNotFound,
    ModelRepository,
    ModelUnavailable,
    ModelVersion,
    shown,
)
from ganserve.server.runner import cpu_cores
from ganserve.tensor import from_tensor, to_tensor, to_uint8, to_unit
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc

OFF_LOOP_LABELS = 1 << 16  # longer label lists are converted on the worker pool
STREAM_PREFETCH = 2  # chunks of a stream in flight at once: the next computes while one is sent
_RPC_OF_KIND = {"unconditional": "Sample", "conditional": "Generate", "translation": "Translate"}


# the model versions the current rpc resolved (set per rpc by `instrumented`)
_HELD: contextvars.ContextVar[list[ModelVersion] | None] = contextvars.ContextVar(
    "held", default=None
)


def _release(held: list[ModelVersion]) -> None:
    for mv in held:
        mv.users -= 1
    held.clear()


class Abort(Exception):
    """Ends an rpc with `code`; the message names the field and the allowed range."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(message: str) -> Abort:
    return Abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def tensor_to_array(tensor: pb.Tensor, field: str) -> np.ndarray:
    """A wire Tensor as an array; INVALID_ARGUMENT naming `field` when it is malformed."""
    try:
        return from_tensor(tensor, field)
    except ValueError as exc:
        raise invalid(str(exc)) from None


def _condition(request: Any) -> str | None:
    """Which of labels / label / balanced a GenerateRequest set (None for other requests)."""
    return request.WhichOneof("condition") if isinstance(request, pb.GenerateRequest) else None


class GeneratorService(pb_grpc.GeneratorServicer):
    """Every rpc of ganserve.v1.Generator on top of a loaded ModelRepository."""

    def __init__(self, repo: ModelRepository, config: ServerConfig, metrics: Metrics) -> None:
        self.repo, self.config, self.metrics = repo, config, metrics
        self.draining = False
        # CPU-heavy request work (PNG decoding and encoding) runs here, never on the event loop
        self.cpu_pool = ThreadPoolExecutor(cpu_cores(), thread_name_prefix="request-cpu")

    def close(self) -> None:
        self.cpu_pool.shutdown(wait=True, cancel_futures=True)

    # -- plumbing ---------------------------------------------------------------------------

    def _model(self, name: str, version: int, method: str) -> ModelVersion:
        if self.draining:
            raise Abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry elsewhere")
        if not name:
            raise invalid("model: required (ListModels shows the names)")
        if version < 0:
            raise invalid(f"version: {version}; 0 (the latest) or a version number")
        try:
            mv = self.repo.get(name, version)
        except ModelNotFound as exc:
            raise Abort(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except ModelUnavailable as exc:
            raise Abort(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        held = _HELD.get()
        if held is not None:  # the version is not unloaded while this rpc may still use it
            mv.users += 1
            held.append(mv)
        assert mv.card is not None
        wanted = _RPC_OF_KIND[mv.card.kind]
        # ModelInfer (server.oip) asks for whichever rpc the model's kind offers
        if method != "ModelInfer" and method.removesuffix("Stream") != wanted:
            raise Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model: {name!r} is {mv.card.kind}; call {wanted}, not {method}",
            )
        return mv

    async def _run(self, mv: ModelVersion, feeds: dict[str, np.ndarray]) -> np.ndarray:
        assert mv.batcher is not None
        try:
            return await mv.batcher.submit(feeds)
        except QueueFull as exc:
            raise Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None

    def _check_count(self, count: int, stream: bool, field: str = "count") -> None:
        limit = self.config.max_images_per_call
        if count < 1 or (not stream and count > limit):
            allowed = "at least 1" if stream else f"1 to {limit} (use the stream rpc for more)"
            raise invalid(f"{field}: {count}; must be {allowed}")

    def _check_response_size(self, card: ModelCard, n: int, h: int, w: int, encoding: int) -> None:
        itemsize = 4 if encoding == pb.RAW_FLOAT32 else 1
        size = n * h * w * card.channels * itemsize
        if size > self.config.max_message_bytes - 4096:
            raise invalid(
                f"count: {n} images of {h}x{w}x{card.channels} make {size} bytes, "
                f"over the {self.config.max_message_bytes}-byte message limit"
            )

    def _count(self, request: Any, stream: bool) -> int:
        """Images asked for: rows of `latents`, else `count`, else one per listed label."""
        count, field = image_count(request)
        self._check_count(count, stream, field)
        if request.start_index + count > 2**64:
            raise invalid(f"start_index: {request.start_index} + {count} images passes 2^64")
        return count

    def _latent_source(self, request: Any, card: ModelCard) -> Callable[[int, int], np.ndarray]:
        """Checks the latent fields once; returns (lo, n) → latents of images lo .. lo + n - 1
        of the request (its own rows, or those of its seed from `start_index + lo`)."""
        truncation = float(request.truncation)
        if truncation and not MIN_TRUNCATION <= truncation <= 10:
            raise invalid(f"truncation: {truncation:g}; 0 (off) or {MIN_TRUNCATION} to 10")
        if request.HasField("latents"):
            z = tensor_to_array(request.latents, "latents")
            if z.dtype != np.float32 or z.ndim != 2 or z.shape[1] != card.latent_size:
                raise invalid(
                    f"latents: {z.dtype}{list(z.shape)}; must be float32 [N, {card.latent_size}]"
                )
            if not np.isfinite(z).all():
                raise invalid("latents: contains NaN or infinity")
            if truncation:
                z = np.clip(z, -truncation, truncation)
            return lambda lo, n: z[lo : lo + n]
        seed, start, nz = request.seed, request.start_index, card.latent_size
        return lambda lo, n: latents(seed, start + lo, n, nz, truncation=truncation)

    async def _label_source(
        self, request: pb.GenerateRequest, card: ModelCard, count: int
    ) -> Callable[[int, int], np.ndarray]:
        """Checks the condition once; returns (lo, n) → labels of images lo .. lo + n - 1."""
        which, c = _condition(request), card.num_classes
        if which is None:
            raise invalid("labels: give labels (one per image), label (one for all) or balanced")
        if which == "balanced" and not request.balanced:
            raise invalid("balanced: false; set it true, or give labels or label instead")
        if which == "balanced":  # image index i shows class i mod c
            start = request.start_index
            return lambda lo, n: balanced_labels(start + lo, n, c)
        if which == "labels":
            values = request.labels.values
            if len(values) > OFF_LOOP_LABELS:  # millions of labels take seconds to convert
                loop = asyncio.get_running_loop()
                values = await loop.run_in_executor(self.cpu_pool, _labels_array, request.labels)
            else:
                values = _int64_array(values)
            if len(values) != count:
                raise invalid(f"labels: {len(values)} labels for {count} images")
        else:
            values = np.asarray([request.label], np.int64)
        bad = values[(values < 0) | (values >= c)]
        if len(bad):
            raise invalid(
                f"{which}: label {bad[0]} out of range; 0 to {c - 1} ({card.class_names})"
            )
        if which == "labels":
            return lambda lo, n: values[lo : lo + n]
        return lambda lo, n: np.full(n, request.label, np.int64)

    async def _prepare(
        self, request: Any, method: str, stream: bool
    ) -> tuple[ModelVersion, int, Callable[[int, int], dict[str, np.ndarray]]]:
        """Model, image count, and (lo, n) → the generator's inputs for images lo .. lo + n - 1,
        everything checked before any work is queued."""
        mv = self._model(request.model, request.version, method)
        card = mv.card
        assert card is not None
        self._check_encoding(request.encoding)
        count = self._count(request, stream)
        z_of = self._latent_source(request, card)
        if card.kind != "conditional":
            return mv, count, lambda lo, n: {"z": z_of(lo, n)}
        label_of = await self._label_source(request, card, count)
        return mv, count, lambda lo, n: {"z": z_of(lo, n), "label": label_of(lo, n)}

    async def _reply(
        self,
        mv: ModelVersion,
        method: str,
        out: np.ndarray,
        encoding: int,
        start: int = 0,
        labels: np.ndarray | None = None,
    ) -> pb.ImageBatch:
        """The message for generator output `out` (uint8 NHWC, or float NCHW in [-1, 1])."""
        assert mv.card is not None
        self.metrics.images_of(mv.name, method).inc(len(out))
        reply = pb.ImageBatch(model=mv.name, version=mv.version, start_index=start, layout="NHWC")
        if labels is not None:
            reply.labels.extend(labels.tolist())
        if encoding == pb.RAW_FLOAT32:
            images = to_unit(out) if mv.card.uint8_output else out.transpose(0, 2, 3, 1)
            reply.images.CopyFrom(to_tensor(images))
            return reply
        uint8 = out
        if not mv.card.uint8_output:
            uint8 = to_uint8(out.transpose(0, 2, 3, 1))
        if encoding == pb.PNG:
            loop = asyncio.get_running_loop()
            reply.png.extend(await loop.run_in_executor(self.cpu_pool, _encode_pngs, uint8))
        else:
            reply.images.CopyFrom(to_tensor(uint8))
        return reply

    def _check_encoding(self, encoding: int) -> None:
        if encoding not in (pb.ENCODING_UNSPECIFIED, pb.RAW_UINT8, pb.RAW_FLOAT32, pb.PNG):
            raise invalid(f"encoding: {encoding}; one of RAW_UINT8, RAW_FLOAT32, PNG")

    # -- rpcs -------------------------------------------------------------------------------

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[self._info(name, 0) for name in sorted(self.repo.models)]
        )

    async def DescribeModel(self, request: pb.DescribeModelRequest, context: Any) -> pb.ModelInfo:
        if request.model not in self.repo.models:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"model: no model {shown(request.model)}")
        if request.version and request.version not in self.repo.models[request.model]:
            raise Abort(
                grpc.StatusCode.NOT_FOUND,
                f"version: model {request.model!r} has no version {request.version}",
            )
        return self._info(request.model, request.version)

    def _info(self, name: str, version: int) -> pb.ModelInfo:
        found = self.repo.models[name]
        info = pb.ModelInfo(name=name, max_images_per_call=self.config.max_images_per_call)
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
        info.max_batch_size = mv.batcher.max_batch_size
        info.execution_provider = mv.runners[0].provider
        info.metadata.update(card.to_props())
        return info

    async def _unary(self, request: Any, method: str) -> pb.ImageBatch:
        mv, count, inputs = await self._prepare(request, method, stream=False)
        card = mv.card
        assert card is not None
        self._check_response_size(card, count, card.height, card.width, request.encoding)
        feeds = inputs(0, count)
        out = await self._run(mv, feeds)
        return await self._reply(
            mv, method, out, request.encoding, request.start_index, feeds.get("label")
        )

    async def Sample(self, request: pb.SampleRequest, context: Any) -> pb.ImageBatch:
        return await self._unary(request, "Sample")

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.ImageBatch:
        return await self._unary(request, "Generate")

    async def _stream(self, request: Any, method: str) -> AsyncIterator[pb.ImageBatch]:
        mv, total, inputs = await self._prepare(request, method, stream=True)
        card = mv.card
        assert card is not None
        chunk = request.chunk_size or self.config.stream_chunk_size
        if not 1 <= chunk <= MAX_CHUNK_SIZE:
            raise invalid(f"chunk_size: {chunk}; 1 to {MAX_CHUNK_SIZE} (0: server default)")
        self._check_response_size(
            card, min(chunk, total), card.height, card.width, request.encoding
        )
        batcher = mv.batcher
        assert batcher is not None
        # The next chunk is queued ahead (computing while the one before is sent) only into
        # the room the batcher keeps for work queued ahead (has_room): it never crowds out a
        # stream's or a call's own work, so a stream is refused only for a real overload.
        pending: deque[tuple[int, dict[str, np.ndarray], Queued, asyncio.Task]] = deque()
        lo = 0
        try:
            while lo < total or pending:
                while lo < total and len(pending) < STREAM_PREFETCH:
                    n, ahead = min(chunk, total - lo), bool(pending)
                    if ahead and not batcher.has_room(n, ahead=True):
                        break
                    feeds = inputs(lo, n)
                    try:
                        queued = batcher.enqueue(feeds, ahead=ahead)
                    except QueueFull as exc:
                        raise Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
                    task = asyncio.ensure_future(batcher.collect(queued))
                    pending.append((lo, feeds, queued, task))
                    lo += n
                start, feeds, _, task = pending.popleft()
                out = await task
                yield await self._reply(
                    mv,
                    method,
                    out,
                    request.encoding,
                    request.start_index + start,
                    feeds.get("label"),
                )
        finally:
            for _, _, queued, task in pending:
                task.cancel()
                batcher.drop(queued)  # also if its task never started

    def SampleStream(self, request: pb.SampleRequest, context: Any) -> AsyncIterator[pb.ImageBatch]:
        return self._stream(request, "SampleStream")

    def GenerateStream(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncIterator[pb.ImageBatch]:
        return self._stream(request, "GenerateStream")

    def _check_sources(self, card: ModelCard, n: int, h: int, w: int) -> None:
        """Count, size and pixel budget of a translation call: checked before any decoding.
        The budget counts output pixels: a super-resolution model's are `scale`^2 per source
        pixel."""
        self._check_count(n, stream=False, field="images")
        m = card.size_multiple
        if h < m or w < m or h % m or w % m:
            raise invalid(f"images: {h}x{w}; height and width must be multiples of {m}")
        out_h, out_w = card.output_size(h, w)
        if n * out_h * out_w > self.config.max_translation_pixels:
            upscaled = f" (upscaled {card.scale}x: {out_h} x {out_w})" if card.scale > 1 else ""
            raise invalid(
                f"images: {n} x {h} x {w}{upscaled} = {n * out_h * out_w} pixels, over the limit "
                f"of {self.config.max_translation_pixels} per call"
            )

    async def _sources(self, request: pb.TranslateRequest, card: ModelCard) -> np.ndarray:
        """The request's source images as uint8 [N, H, W, C], checked against the model.
        PNGs are sized from their headers and checked first, then decoded off the event loop."""
        if request.HasField("images") == bool(request.png):
            raise invalid("images, png: give exactly one of them")
        if not request.png:
            images = tensor_to_array(request.images, "images")
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != card.channels:
                raise invalid(
                    f"images: {images.dtype}{list(images.shape)}; must be uint8 "
                    f"[N, H, W, {card.channels}]"
                )
            self._check_sources(card, *images.shape[:3])
            return images
        self._check_count(len(request.png), stream=False, field="images")
        check = functools.partial(self._check_sources, card)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.cpu_pool, _decode_pngs, list(request.png), card, check
        )

    async def _translate(self, request: pb.TranslateRequest, method: str) -> pb.ImageBatch:
        mv = self._model(request.model, request.version, method)
        assert mv.card is not None
        self._check_encoding(request.encoding)
        images = await self._sources(request, mv.card)
        n, h, w, _ = images.shape
        self._check_response_size(mv.card, n, *mv.card.output_size(h, w), request.encoding)
        spec = mv.card.input("image")
        source = images if spec.dtype == "uint8" else to_unit(images.transpose(0, 3, 1, 2))
        out = await self._run(mv, {"image": np.ascontiguousarray(source)})
        return await self._reply(mv, method, out, request.encoding)

    async def Translate(self, request: pb.TranslateRequest, context: Any) -> pb.ImageBatch:
        return await self._translate(request, "Translate")

    async def TranslateStream(
        self, requests: AsyncIterator[pb.TranslateRequest], context: Any
    ) -> AsyncIterator[pb.ImageBatch]:
        async for request in requests:
            yield await self._translate(parsed(request), "TranslateStream")


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


def _int64_array(values: Any) -> np.ndarray:
    return np.asarray(values, np.int64)


def _encode_pngs(images: np.ndarray) -> list[bytes]:
    return [encode_png(image) for image in images]


def _decode_pngs(
    pngs: list[bytes], card: ModelCard, check: Callable[[int, int, int], None]
) -> np.ndarray:
    """Size a call's PNGs from their structure (`ganserve.png.png_header`: every chunk walked,
    one IHDR), `check` that size (count, multiple, pixel budget), and only then decode them into
    uint8 [N, H, W, C]: on a worker thread, never on the event loop. A refused call decodes
    nothing."""
    from PIL import Image

    sizes = []
    for i, data in enumerate(pngs):
        try:
            header = png_header(data)
        except PngError as exc:
            raise invalid(f"png[{i}]: {exc}") from None
        sizes.append((header.width, header.height))
    if len(set(sizes)) > 1:
        raise invalid("png: all images of one call must have the same size")
    w, h = sizes[0]
    check(len(sizes), h, w)
    images = []
    for i, data in enumerate(pngs):
        try:
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                if image.size != (w, h):  # the decoder must make the size that was checked
                    raise invalid(f"png[{i}]: decodes to {image.size}, its header says {(w, h)}")
                image = image.convert("L" if card.channels == 1 else "RGB")
                array = np.asarray(image, np.uint8)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # Pillow reports a broken file as SyntaxError ("broken PNG file"), others as OSError
            raise invalid(f"png[{i}]: not a readable PNG ({exc})") from None
        images.append(array.reshape(*array.shape[:2], card.channels))
    return np.stack(images)


class _Outcome:
    """The status code an rpc ended with (OK unless an exception said otherwise)."""

    code = grpc.StatusCode.OK


@contextlib.asynccontextmanager
async def _statuses(context: grpc.aio.ServicerContext) -> AsyncIterator[_Outcome]:
    """Map what an rpc raised to its gRPC status: Abort's code, DEADLINE_EXCEEDED or CANCELLED
    when the caller went away, or INTERNAL."""
    outcome = _Outcome()
    try:
        yield outcome
    except Abort as exc:
        outcome.code = exc.code
        await context.abort(exc.code, str(exc))
    except (asyncio.CancelledError, GeneratorExit):
        # GeneratorExit: grpc closed a stream whose reply it could no longer send (the client
        # cancelled while flow control held the server); either way the call did not finish
        left = context.time_remaining()
        expired = left is not None and left <= 0
        outcome.code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        outcome.code = grpc.StatusCode.INTERNAL
        await context.abort(outcome.code, f"internal error: {type(exc).__name__}: {exc}")


class Malformed:
    """A request whose bytes did not parse as its message. gRPC answers a deserializer's
    exception UNKNOWN; the rpc answers this one INVALID_ARGUMENT instead, and counts it."""

    model = ""  # the metrics label of a request that names no model

    def __init__(self, message: str, error: Exception) -> None:
        self.message, self.error = message, error


def parsed(request: Any) -> Any:
    """The request, or INVALID_ARGUMENT if its bytes did not parse."""
    if isinstance(request, Malformed):
        raise invalid(f"the request is not a valid {request.message}: {request.error}")
    return request


def _lenient(parse: Callable[[bytes], Any], message: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Malformed(message, exc)

    return deserialize


class _Lenient:
    """Stands in for a server while the generated code registers its handlers, and registers
    them with deserializers that turn unparsable bytes into Malformed requests."""

    def __init__(self, server: grpc.aio.Server, file: FileDescriptor) -> None:
        self.server = server
        self.file = file

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The generated code registers each method twice: the registered set suffices."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        methods = self.file.services_by_name[service.rsplit(".", 1)[1]].methods_by_name
        lenient = {}
        for method, handler in handlers.items():
            parse = _lenient(handler.request_deserializer, methods[method].input_type.name)
            lenient[method] = handler._replace(request_deserializer=parse)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, lenient),)
        )
        self.server.add_registered_method_handlers(service, lenient)


def add_to_server(service: GeneratorService, server: grpc.aio.Server) -> None:
    """Register ganserve.v1 and the Open Inference Protocol over one GeneratorService, each rpc
    instrumented (status codes, request metrics); malformed request bytes are INVALID_ARGUMENT."""
    from ganserve.oip import grpc_service_pb2, grpc_service_pb2_grpc
    from ganserve.server.oip import InferenceService

    v1 = pb.DESCRIPTOR.services_by_name["Generator"]
    pb_grpc.add_GeneratorServicer_to_server(
        instrumented(service, service, v1), _Lenient(server, pb.DESCRIPTOR)
    )
    oip = grpc_service_pb2.DESCRIPTOR
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        instrumented(
            InferenceService(service), service, oip.services_by_name["GRPCInferenceService"]
        ),
        _Lenient(server, oip),
    )


def _model_field(rpc: Any) -> str:
    """The request field that names the model: `model` (ganserve.v1), `model_name` or `name`
    (OIP); "" for an rpc about no model. Looked up once per rpc, when it is wrapped."""
    fields = rpc.input_type.fields_by_name
    return next((f for f in ("model", "model_name", "name") if f in fields), "")


def instrumented(servicer: Any, service: GeneratorService, rpcs: ServiceDescriptor) -> Any:
    """Wrap every rpc of `rpcs` on `servicer`: status codes from Abort, and the request metrics
    for each call (labelled with the model, if the server has it)."""
    metrics = service.metrics

    def model_label(request: Any, field: str) -> str:
        name = getattr(request, field, "") if field else ""  # a Malformed request has none
        return name if name in service.repo.models else "unknown"

    def record(model: str, method: str, outcome: _Outcome, started: float) -> None:
        metrics.requests_of(model, method, outcome.code.name).inc()
        metrics.request_latency_of(model, method).observe(time.perf_counter() - started)

    def unary(method: str, fn: Callable, field: str) -> Callable:
        @functools.wraps(fn)
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, outcome = time.perf_counter(), _Outcome()
            held: list[ModelVersion] = []
            _HELD.set(held)
            try:
                async with _statuses(context) as outcome:
                    return await fn(parsed(request), context)
            finally:
                _release(held)
                record(model_label(request, field), method, outcome, started)

        return handler

    def streaming(method: str, fn: Callable, client_stream: bool, field: str) -> Callable:
        @functools.wraps(fn)
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started, outcome = time.perf_counter(), _Outcome()
            label = "unknown" if client_stream else model_label(request, field)
            held: list[ModelVersion] = []
            _HELD.set(held)
            try:
                async with _statuses(context) as outcome:
                    async for reply in fn(request if client_stream else parsed(request), context):
                        label = reply.model
                        yield reply
            finally:
                _release(held)
                record(label, method, outcome, started)

        return handler

    for rpc in rpcs.methods:
        fn, field = getattr(servicer, rpc.name), _model_field(rpc)
        if rpc.server_streaming:
            setattr(servicer, rpc.name, streaming(rpc.name, fn, rpc.client_streaming, field))
        else:
            setattr(servicer, rpc.name, unary(rpc.name, fn, field))
    return servicer
