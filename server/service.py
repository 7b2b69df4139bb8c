"""The ganserve.v1.Generator service: validation, latents, batching, encoding, status codes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np

from export.metadata import ModelCard
from ganserve.latent import MIN_TRUNCATION, latents
from ganserve.png import encode_png
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc
from server.batcher import QueueFull
from server.config import ServerConfig
from server.metrics import Metrics
from server.models import ModelNotFound, ModelRepository, ModelUnavailable, ModelVersion

MAX_CHUNK_SIZE = 4096
STREAM_PREFETCH = 2  # chunks of a stream in flight at once: the next computes while one is sent
_DTYPES = {"uint8": np.uint8, "float32": np.float32, "int64": np.int64}
_RPC_OF_KIND = {"unconditional": "Sample", "conditional": "Generate", "translation": "Translate"}


class Abort(Exception):
    """Ends an rpc with `code`; the message names the field and the allowed range."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(message: str) -> Abort:
    return Abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def tensor_to_array(tensor: pb.Tensor, field: str) -> np.ndarray:
    """A wire Tensor as a numpy array, checking dtype, shape and byte count."""
    if tensor.dtype not in _DTYPES:
        raise invalid(f"{field}.dtype: {tensor.dtype!r}; one of {', '.join(_DTYPES)}")
    dtype = np.dtype(_DTYPES[tensor.dtype]).newbyteorder("<")
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise invalid(f"{field}.shape: {list(shape)} has a negative dimension")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(tensor.data):
        raise invalid(
            f"{field}.data: {len(tensor.data)} bytes, shape {list(shape)} of "
            f"{tensor.dtype} needs {expected}"
        )
    return np.frombuffer(tensor.data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def array_to_tensor(array: np.ndarray) -> pb.Tensor:
    array = np.ascontiguousarray(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return pb.Tensor(dtype=array.dtype.name, shape=array.shape, data=little.tobytes())


class GeneratorService(pb_grpc.GeneratorServicer):
    """Every rpc of ganserve.v1.Generator on top of a loaded ModelRepository."""

    def __init__(self, repo: ModelRepository, config: ServerConfig, metrics: Metrics) -> None:
        self.repo, self.config, self.metrics = repo, config, metrics
        self.draining = False

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
        assert mv.card is not None
        wanted = _RPC_OF_KIND[mv.card.kind]
        if method.removesuffix("Stream") != wanted:
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

    def _latents(self, request: Any, card: ModelCard, count: int) -> np.ndarray:
        """The request's own latents [n, nz], or those of its seed for `count` images."""
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
            return np.clip(z, -truncation, truncation) if truncation else z
        try:
            return latents(
                request.seed, request.start_index, count, card.latent_size, truncation=truncation
            )
        except ValueError as exc:
            raise invalid(f"seed, start_index: {exc}") from None

    def _count(self, request: Any, stream: bool) -> int:
        if request.HasField("latents"):
            count = request.latents.shape[0] if request.latents.shape else 0
            self._check_count(count, stream, "latents")
            return count
        self._check_count(request.count, stream)
        return request.count

    def _labels(self, request: pb.GenerateRequest, card: ModelCard, count: int) -> np.ndarray:
        which = request.WhichOneof("condition")
        c = card.num_classes
        if which is None:
            raise invalid("labels: give labels (one per image), label (one for all) or balanced")
        if which == "labels":
            labels = np.asarray(request.labels.values, np.int64)
            if len(labels) != count and not (
                request.count == 0 and not request.HasField("latents")
            ):
                raise invalid(f"labels: {len(labels)} labels for {count} images")
        elif which == "label":
            labels = np.full(count, request.label, np.int64)
        else:
            labels = (np.arange(count, dtype=np.int64) + request.start_index % c) % c
        if len(labels) and (labels.min() < 0 or labels.max() >= c):
            bad = labels[(labels < 0) | (labels >= c)][0]
            raise invalid(f"{which}: label {bad} out of range; 0 to {c - 1} ({card.class_names})")
        return labels

    def _reply(
        self,
        mv: ModelVersion,
        out: np.ndarray,
        encoding: int,
        start: int = 0,
        labels: np.ndarray | None = None,
    ) -> pb.ImageBatch:
        assert mv.card is not None
        reply = pb.ImageBatch(model=mv.name, version=mv.version, start_index=start, layout="NHWC")
        if labels is not None:
            reply.labels.extend(labels.tolist())
        if mv.card.uint8_output:
            uint8 = out
            as_float = lambda: out.astype(np.float32) / 127.5 - 1.0  # noqa: E731
        else:
            nhwc = out.transpose(0, 2, 3, 1)
            uint8 = np.rint((nhwc + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
            as_float = lambda: np.ascontiguousarray(nhwc, np.float32)  # noqa: E731
        if encoding == pb.PNG:
            reply.png.extend(encode_png(image) for image in uint8)
        elif encoding == pb.RAW_FLOAT32:
            reply.images.CopyFrom(array_to_tensor(as_float()))
        else:
            reply.images.CopyFrom(array_to_tensor(uint8))
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
            raise Abort(grpc.StatusCode.NOT_FOUND, f"model: no model {request.model!r}")
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
            state = {
                "ready": pb.VersionState.READY,
                "loading": pb.VersionState.LOADING,
                "failed": pb.VersionState.FAILED,
            }[mv.state]
            info.versions.add(version=v, state=state, error=mv.error)
        try:
            mv = self.repo.get(name, version)
        except (ModelNotFound, ModelUnavailable):
            return info  # no ready version: the states say why
        card = mv.card
        assert card is not None and mv.runner is not None and mv.batcher is not None
        info.version = mv.version
        info.kind = card.kind
        info.latent_size = card.latent_size
        info.num_classes = card.num_classes
        info.class_names.extend(card.class_names)
        info.height, info.width, info.channels = card.height, card.width, card.channels
        info.size_multiple = card.size_multiple
        info.max_batch_size = mv.batcher.max_batch_size
        info.execution_provider = mv.runner.provider
        info.metadata.update(card.to_props())
        return info

    async def Sample(self, request: pb.SampleRequest, context: Any) -> pb.ImageBatch:
        mv = self._model(request.model, request.version, "Sample")
        assert mv.card is not None
        self._check_encoding(request.encoding)
        count = self._count(request, stream=False)
        self._check_response_size(mv.card, count, mv.card.height, mv.card.width, request.encoding)
        z = self._latents(request, mv.card, count)
        out = await self._run(mv, {"z": z})
        self.metrics.images.labels(mv.name, "Sample").inc(count)
        return self._reply(mv, out, request.encoding, request.start_index)

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.ImageBatch:
        mv = self._model(request.model, request.version, "Generate")
        assert mv.card is not None
        self._check_encoding(request.encoding)
        if (
            request.WhichOneof("condition") == "labels"
            and not request.count
            and not (request.HasField("latents"))
        ):
            request.count = len(request.labels.values)
        count = self._count(request, stream=False)
        self._check_response_size(mv.card, count, mv.card.height, mv.card.width, request.encoding)
        labels = self._labels(request, mv.card, count)
        z = self._latents(request, mv.card, count)
        out = await self._run(mv, {"z": z, "label": labels})
        self.metrics.images.labels(mv.name, "Generate").inc(count)
        return self._reply(mv, out, request.encoding, request.start_index, labels)

    async def _stream(
        self, mv: ModelVersion, request: Any, method: str, conditional: bool
    ) -> AsyncIterator[pb.ImageBatch]:
        assert mv.card is not None
        card = mv.card
        self._check_encoding(request.encoding)
        if conditional and request.WhichOneof("condition") == "labels" and not request.count:
            request.count = len(request.labels.values)
        total = self._count(request, stream=True)
        chunk = request.chunk_size or self.config.stream_chunk_size
        if not 1 <= chunk <= MAX_CHUNK_SIZE:
            raise invalid(f"chunk_size: {chunk}; 1 to {MAX_CHUNK_SIZE} (0: server default)")
        self._check_response_size(
            card, min(chunk, total), card.height, card.width, request.encoding
        )
        all_labels = (
            self._labels(request, card, total)
            if conditional and (request.WhichOneof("condition") == "labels")
            else None
        )
        explicit = self._latents(request, card, 0) if request.HasField("latents") else None

        def feeds(lo: int, n: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
            if explicit is not None:
                z = explicit[lo : lo + n]
            else:
                z = latents(
                    request.seed,
                    request.start_index + lo,
                    n,
                    card.latent_size,
                    truncation=float(request.truncation),
                )
            if not conditional:
                return {"z": z}, None
            if all_labels is not None:
                labels = all_labels[lo : lo + n]
            elif request.WhichOneof("condition") == "label":
                labels = np.full(n, request.label, np.int64)
            else:
                c = card.num_classes
                labels = (np.arange(n, dtype=np.int64) + (request.start_index + lo) % c) % c
            return {"z": z, "label": labels}, labels

        if conditional and all_labels is None:  # `label` or `balanced`: check before streaming
            self._labels(request, card, min(total, chunk))
        pending: deque[tuple[int, np.ndarray | None, asyncio.Task[np.ndarray]]] = deque()
        lo = 0
        try:
            while lo < total or pending:
                while lo < total and len(pending) < STREAM_PREFETCH:
                    n = min(chunk, total - lo)
                    inputs, labels = feeds(lo, n)
                    pending.append((lo, labels, asyncio.ensure_future(self._run(mv, inputs))))
                    lo += n
                start, labels, task = pending.popleft()
                out = await task
                self.metrics.images.labels(mv.name, method).inc(len(out))
                yield self._reply(mv, out, request.encoding, request.start_index + start, labels)
        finally:
            for _, _, task in pending:
                task.cancel()

    def SampleStream(self, request: pb.SampleRequest, context: Any) -> AsyncIterator[pb.ImageBatch]:
        mv = self._model(request.model, request.version, "SampleStream")
        return self._stream(mv, request, "SampleStream", conditional=False)

    def GenerateStream(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncIterator[pb.ImageBatch]:
        mv = self._model(request.model, request.version, "GenerateStream")
        return self._stream(mv, request, "GenerateStream", conditional=True)

    def _sources(self, request: pb.TranslateRequest, card: ModelCard) -> np.ndarray:
        """The request's source images as uint8 [N, H, W, C], checked against the model."""
        if request.HasField("images") == bool(request.png):
            raise invalid("images, png: give exactly one of them")
        if request.png:
            images = (
                np.stack([self._decode_png(data, i, card) for i, data in enumerate(request.png)])
                if _same_png_size(request.png)
                else None
            )
            if images is None:
                raise invalid("png: all images of one call must have the same size")
        else:
            images = tensor_to_array(request.images, "images")
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != card.channels:
                raise invalid(
                    f"images: {images.dtype}{list(images.shape)}; must be uint8 "
                    f"[N, H, W, {card.channels}]"
                )
        n, h, w, _ = images.shape
        self._check_count(n, stream=False, field="images")
        m = card.size_multiple
        if h < m or w < m or h % m or w % m:
            raise invalid(f"images: {h}x{w}; height and width must be multiples of {m}")
        if n * h * w > self.config.max_translation_pixels:
            raise invalid(
                f"images: {n} x {h} x {w} = {n * h * w} pixels, over the limit of "
                f"{self.config.max_translation_pixels} per call"
            )
        return images

    @staticmethod
    def _decode_png(data: bytes, i: int, card: ModelCard) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                image = image.convert("L" if card.channels == 1 else "RGB")
                array = np.asarray(image, np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise invalid(f"png[{i}]: not a readable image ({exc})") from None
        return array.reshape(*array.shape[:2], card.channels)

    async def _translate(self, mv: ModelVersion, request: pb.TranslateRequest) -> pb.ImageBatch:
        assert mv.card is not None
        self._check_encoding(request.encoding)
        images = self._sources(request, mv.card)
        n, h, w, _ = images.shape
        self._check_response_size(mv.card, n, h, w, request.encoding)
        spec = mv.card.input("image")
        if spec.dtype == "uint8":
            source = images
        else:
            source = images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
        out = await self._run(mv, {"image": np.ascontiguousarray(source)})
        return self._reply(mv, out, request.encoding)

    async def Translate(self, request: pb.TranslateRequest, context: Any) -> pb.ImageBatch:
        mv = self._model(request.model, request.version, "Translate")
        reply = await self._translate(mv, request)
        self.metrics.images.labels(mv.name, "Translate").inc(
            reply.images.shape[0] or len(reply.png)
        )
        return reply

    async def TranslateStream(
        self, requests: AsyncIterator[pb.TranslateRequest], context: Any
    ) -> AsyncIterator[pb.ImageBatch]:
        async for request in requests:
            mv = self._model(request.model, request.version, "TranslateStream")
            reply = await self._translate(mv, request)
            self.metrics.images.labels(mv.name, "TranslateStream").inc(
                reply.images.shape[0] or len(reply.png)
            )
            yield reply


def _same_png_size(blobs: Any) -> bool:
    """All PNGs of a call share one size (read from each IHDR without decoding)."""
    sizes = {bytes(b[16:24]) for b in blobs}
    return len(sizes) == 1


class _Outcome:
    """The status code an rpc ended with (OK unless an exception said otherwise)."""

    code = grpc.StatusCode.OK


@contextlib.asynccontextmanager
async def _statuses(context: grpc.aio.ServicerContext) -> AsyncIterator[_Outcome]:
    """Map what an rpc raised to its gRPC status: Abort's code, CANCELLED, or INTERNAL."""
    outcome = _Outcome()
    try:
        yield outcome
    except Abort as exc:
        outcome.code = exc.code
        await context.abort(exc.code, str(exc))
    except asyncio.CancelledError:
        outcome.code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        outcome.code = grpc.StatusCode.INTERNAL
        await context.abort(outcome.code, f"internal error: {type(exc).__name__}: {exc}")


def instrumented(service: GeneratorService) -> GeneratorService:
    """Wrap every rpc: status codes from Abort, and the request metrics for each call."""
    metrics = service.metrics

    def model_label(request: Any) -> str:
        name = getattr(request, "model", "")
        return name if name in service.repo.models else "unknown"

    def record(model: str, method: str, outcome: _Outcome, started: float) -> None:
        metrics.requests.labels(model, method, outcome.code.name).inc()
        metrics.request_latency.labels(model, method).observe(time.perf_counter() - started)

    def unary(method: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, outcome = time.perf_counter(), _Outcome()
            try:
                async with _statuses(context) as outcome:
                    return await fn(request, context)
            finally:
                record(model_label(request), method, outcome, started)

        return handler

    def streaming(method: str, fn: Callable, client_stream: bool) -> Callable:
        @functools.wraps(fn)
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started, outcome = time.perf_counter(), _Outcome()
            label = "unknown" if client_stream else model_label(request)
            try:
                async with _statuses(context) as outcome:
                    async for reply in fn(request, context):
                        label = reply.model
                        yield reply
            finally:
                record(label, method, outcome, started)

        return handler

    for method in ("ListModels", "DescribeModel", "Sample", "Generate", "Translate"):
        setattr(service, method, unary(method, getattr(service, method)))
    for method in ("SampleStream", "GenerateStream", "TranslateStream"):
        wrapped = streaming(method, getattr(service, method), method == "TranslateStream")
        setattr(service, method, wrapped)
    return service
