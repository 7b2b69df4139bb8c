"""Keyword arguments → protobuf requests, and replies → SDK types (shared by both clients)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ganserve import latent
from ganserve.contract import MASK_FILL, parse_version, request_count
from ganserve.errors import InvalidArgument
from ganserve.tensor import from_tensor, to_tensor
from ganserve.types import Images, ModelInfo, RepositoryModel, VersionState
from ganserve.v1 import ganserve_pb2 as pb

ENCODINGS = {"uint8": pb.RAW_UINT8, "float32": pb.RAW_FLOAT32}


def encoding(value: str) -> int:
    if value not in ENCODINGS:
        raise InvalidArgument(f"encoding: {value!r}; one of {', '.join(ENCODINGS)}")
    return ENCODINGS[value]


def sample_request(
    model: str,
    count: int | None,
    *,
    seed: int,
    start_index: int,
    latents: np.ndarray | None,
    truncation: float,
    version: int,
    output: str,
    chunk_size: int = 0,
) -> pb.SampleRequest:
    request = pb.SampleRequest(
        model=model,
        version=version,
        seed=seed,
        start_index=start_index,
        truncation=truncation,
        encoding=encoding(output),
        chunk_size=chunk_size,
    )
    if latents is not None:
        request.latents.CopyFrom(to_tensor(np.asarray(latents, np.float32)))
    elif count is None:
        raise InvalidArgument("count: give a count of images, or latents")
    else:
        request.count = count
    return request


def generate_request(
    model: str,
    count: int | None,
    *,
    labels: Sequence[int] | np.ndarray | None,
    label: int | None,
    balanced: bool,
    **kwargs: Any,
) -> pb.GenerateRequest:
    given = sum(x is not None and x is not False for x in (labels, label, balanced))
    if given != 1:
        raise InvalidArgument("labels, label, balanced: give exactly one")
    if labels is not None and count is None and kwargs.get("latents") is None:
        count = len(labels)
    base = sample_request(model, count, **kwargs)
    request = pb.GenerateRequest()
    for name in (
        "model",
        "version",
        "seed",
        "start_index",
        "truncation",
        "encoding",
        "chunk_size",
        "count",
    ):
        setattr(request, name, getattr(base, name))
    if base.HasField("latents"):
        request.latents.CopyFrom(base.latents)
    if labels is not None:
        request.labels.values.extend(int(v) for v in labels)
    elif label is not None:
        request.label = label
    else:
        request.balanced = True
    return request


Point = tuple[int, int] | np.ndarray  # one end of a path: (seed, index), or a latent [nz]
# the path methods (ganserve.latent's) and their wire values
PATH_METHODS = {m: pb.InterpolateRequest.Method.Value(m.upper()) for m in latent.PATH_METHODS}


def _point(message: pb.LatentPoint, point: Point, field: str) -> None:
    if isinstance(point, tuple):
        if len(point) != 2:
            raise InvalidArgument(f"{field}: {point!r}; (seed, index) or a latent vector")
        message.image.seed, message.image.index = point
    else:
        message.latent.CopyFrom(to_tensor(np.asarray(point, np.float32)))


def interpolate_request(
    model: str,
    start: Point,
    end: Point,
    steps: int,
    *,
    method: str,
    label: int | None,
    truncation: float,
    version: int,
    output: str,
    start_index: int = 0,
    chunk_size: int = 0,
) -> pb.InterpolateRequest:
    if method not in PATH_METHODS:
        raise InvalidArgument(f"method: {method!r}; one of {', '.join(PATH_METHODS)}")
    request = pb.InterpolateRequest(
        model=model,
        version=version,
        steps=steps,
        start_index=start_index,
        method=PATH_METHODS[method],
        truncation=truncation,
        encoding=encoding(output),
        chunk_size=chunk_size,
    )
    _point(request.start, start, "start")
    _point(request.end, end, "end")
    if label is not None:
        request.label = label
    return request


def translate_request(
    model: str, images: np.ndarray, *, version: int, output: str, masks: Any = None
) -> pb.TranslateRequest:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InvalidArgument(f"images: {images.dtype}{list(images.shape)}; uint8 [N, H, W, C]")
    request = pb.TranslateRequest(
        model=model, version=version, images=to_tensor(images), encoding=encoding(output)
    )
    if masks is not None:  # booleans (True = fill) become 0 / MASK_FILL; uint8 goes as it is
        masks = np.asarray(masks)
        if masks.dtype == np.bool_:
            masks = masks.astype(np.uint8) * MASK_FILL
        if masks.dtype != np.uint8:
            raise InvalidArgument(
                f"masks: {masks.dtype}{list(masks.shape)}; bool or uint8 [N, H, W] (255 = fill)"
            )
        request.mask.CopyFrom(to_tensor(masks))
    return request


def images(reply: pb.ImageBatch) -> Images:
    pixels = from_tensor(reply.images, "images")
    labels = np.asarray(reply.labels, np.int64) if len(reply.labels) else None
    return Images(pixels, reply.model, reply.version, reply.start_index, labels)


def model_info(info: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=info.name,
        version=info.version,
        kind=info.kind,
        latent_size=info.latent_size,
        num_classes=info.num_classes,
        class_names=tuple(info.class_names),
        height=info.height,
        width=info.width,
        channels=info.channels,
        size_multiple=info.size_multiple,
        max_batch_size=info.max_batch_size,
        max_images_per_call=info.max_images_per_call,
        execution_provider=info.execution_provider,
        versions=tuple(
            VersionState(v.version, pb.VersionState.State.Name(v.state), v.error)
            for v in info.versions
        ),
        metadata=dict(info.metadata),
        scale=info.scale or 1,  # servers before super-resolution leave it unset
        masked=info.masked,
    )


def repository_models(reply: Any) -> list[RepositoryModel]:
    """The entries of an Open Inference Protocol RepositoryIndexResponse."""
    return [
        RepositoryModel(m.name, parse_version(m.version) or 0, m.state, m.reason)
        for m in reply.models
    ]


def total(request: Any) -> int:
    """How many images a stream request asks for."""
    return request_count(request)


def resume(request: Any, received: int) -> Any:
    """The same stream request for the images after the first `received` (a retry mid-stream:
    images depend on (seed, index, label) alone, so the rest of the stream is the same)."""
    if not received:
        return request
    rest = type(request)()
    rest.CopyFrom(request)
    rest.start_index = request.start_index + received
    if isinstance(request, pb.InterpolateRequest):
        return rest  # the path's later steps: its count follows from start_index
    if request.HasField("latents"):
        n = request.latents.shape[0]
        row = len(request.latents.data) // max(n, 1)
        rest.latents.shape[0] = n - received
        rest.latents.data = request.latents.data[received * row :]
    elif isinstance(request, pb.GenerateRequest) and request.WhichOneof("condition") == "labels":
        del rest.labels.values[:received]
        rest.count = len(rest.labels.values)
    else:
        rest.count = request.count - received
    return rest
