"""`AsyncClient`: `Client`'s methods, awaited (streams: `async for`); see `ganserve.client`."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import numpy as np

from ganserve import _wire
from ganserve._base import Base
from ganserve._wire import Point
from ganserve.oip import grpc_service_pb2 as oip
from ganserve.types import Images, Labels, ModelInfo, RepositoryModel
from ganserve.v1 import ganserve_pb2 as pb


class AsyncClient(Base):
    """The asyncio client: the same methods as `Client`, awaited (streams: `async for`)."""

    _aio = True

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def _call(
        self, method: str, request: Any, timeout: float | None, service: str = "v1"
    ) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        for attempt in itertools.count():
            stub, left = self._attempt(deadline, service)
            try:
                return await getattr(stub, method)(
                    request, timeout=left, metadata=self._call_metadata()
                )
            except grpc.RpcError as exc:
                await asyncio.sleep(self._wait_before_retry(exc, attempt, deadline))
        raise AssertionError("unreachable")

    async def _stream(
        self, method: str, request: Any, timeout: float | None
    ) -> AsyncIterator[Images]:
        deadline = time.monotonic() + (timeout or self.timeout)
        received = 0
        for attempt in itertools.count():
            stub, left = self._attempt(deadline)
            call = getattr(stub, method)(
                _wire.resume(request, received), timeout=left, metadata=self._call_metadata()
            )
            try:
                async for reply in call:
                    batch = _wire.images(reply)
                    received += len(batch)
                    yield batch
                return
            except grpc.RpcError as exc:
                if received >= _wire.total(request):
                    return  # every image arrived before the status broke: nothing to resume
                await asyncio.sleep(self._wait_before_retry(exc, attempt, deadline))
            finally:
                call.cancel()  # a reader that stopped early: the server stops computing now

    async def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        reply = await self._call("ListModels", pb.ListModelsRequest(), timeout)
        return [_wire.model_info(m) for m in reply.models]

    async def repository_index(
        self, *, ready: bool = False, timeout: float | None = None
    ) -> list[RepositoryModel]:
        """As `Client.repository_index`."""
        request = oip.RepositoryIndexRequest(ready=ready)
        reply = await self._call("RepositoryIndex", request, timeout, "oip")
        return _wire.repository_models(reply)

    async def load_model(self, model: str, *, timeout: float | None = None) -> None:
        """As `Client.load_model`."""
        request = oip.RepositoryModelLoadRequest(model_name=model)
        await self._call("RepositoryModelLoad", request, timeout, "oip")

    async def unload_model(self, model: str, *, timeout: float | None = None) -> None:
        """As `Client.unload_model`."""
        request = oip.RepositoryModelUnloadRequest(model_name=model)
        await self._call("RepositoryModelUnload", request, timeout, "oip")

    async def describe_model(
        self, model: str, *, version: int = 0, timeout: float | None = None
    ) -> ModelInfo:
        request = pb.DescribeModelRequest(model=model, version=version)
        return _wire.model_info(await self._call("DescribeModel", request, timeout))

    async def sample(
        self,
        model: str,
        count: int | None = None,
        *,
        seed: int = 0,
        start_index: int = 0,
        latents: np.ndarray | None = None,
        truncation: float = 0.0,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> Images:
        """As `Client.sample`."""
        request = _wire.sample_request(
            model,
            count,
            seed=seed,
            start_index=start_index,
            latents=latents,
            truncation=truncation,
            version=version,
            output=output,
        )
        return _wire.images(await self._call("Sample", request, timeout))

    async def generate(
        self,
        model: str,
        count: int | None = None,
        *,
        labels: Labels | None = None,
        label: int | None = None,
        balanced: bool = False,
        seed: int = 0,
        start_index: int = 0,
        latents: np.ndarray | None = None,
        truncation: float = 0.0,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> Images:
        """As `Client.generate`."""
        request = _wire.generate_request(
            model,
            count,
            labels=labels,
            label=label,
            balanced=balanced,
            seed=seed,
            start_index=start_index,
            latents=latents,
            truncation=truncation,
            version=version,
            output=output,
        )
        return _wire.images(await self._call("Generate", request, timeout))

    async def translate(
        self,
        model: str,
        images: np.ndarray,
        *,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> Images:
        """As `Client.translate`."""
        request = _wire.translate_request(model, images, version=version, output=output)
        return _wire.images(await self._call("Translate", request, timeout))

    async def inpaint(
        self,
        model: str,
        images: np.ndarray,
        masks: np.ndarray,
        *,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> Images:
        """`Client.inpaint`, awaited."""
        request = _wire.translate_request(
            model, images, version=version, output=output, masks=masks
        )
        return _wire.images(await self._call("Translate", request, timeout))

    async def translate_png(
        self,
        model: str,
        png: Sequence[bytes],
        *,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
        mask_png: Sequence[bytes] | None = None,
    ) -> Images:
        """As `Client.translate_png`."""
        request = pb.TranslateRequest(
            model=model, version=version, png=list(png), encoding=_wire.encoding(output)
        )
        if mask_png is not None:  # an inpainting model's masks, one greyscale PNG per image
            request.mask_png.extend(mask_png)
        return _wire.images(await self._call("Translate", request, timeout))

    def sample_stream(
        self,
        model: str,
        count: int,
        *,
        seed: int = 0,
        start_index: int = 0,
        truncation: float = 0.0,
        chunk_size: int = 0,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> AsyncIterator[Images]:
        """As `Client.sample_stream` (`async for`)."""
        request = _wire.sample_request(
            model,
            count,
            seed=seed,
            start_index=start_index,
            latents=None,
            truncation=truncation,
            version=version,
            output=output,
            chunk_size=chunk_size,
        )
        return self._stream("SampleStream", request, timeout)

    def generate_stream(
        self,
        model: str,
        count: int | None = None,
        *,
        labels: Labels | None = None,
        label: int | None = None,
        balanced: bool = False,
        seed: int = 0,
        start_index: int = 0,
        truncation: float = 0.0,
        chunk_size: int = 0,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> AsyncIterator[Images]:
        """As `Client.generate_stream` (`async for`)."""
        request = _wire.generate_request(
            model,
            count,
            labels=labels,
            label=label,
            balanced=balanced,
            seed=seed,
            start_index=start_index,
            latents=None,
            truncation=truncation,
            version=version,
            output=output,
            chunk_size=chunk_size,
        )
        return self._stream("GenerateStream", request, timeout)

    async def interpolate(
        self,
        model: str,
        start: Point,
        end: Point,
        steps: int,
        *,
        method: str = "spherical",
        label: int | None = None,
        truncation: float = 0.0,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> Images:
        """`Client.interpolate`, awaited."""
        request = _wire.interpolate_request(
            model,
            start,
            end,
            steps,
            method=method,
            label=label,
            truncation=truncation,
            version=version,
            output=output,
        )
        return _wire.images(await self._call("Interpolate", request, timeout))

    def interpolate_stream(
        self,
        model: str,
        start: Point,
        end: Point,
        steps: int,
        *,
        method: str = "spherical",
        label: int | None = None,
        truncation: float = 0.0,
        chunk_size: int = 0,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> AsyncIterator[Images]:
        """A long path in order, `chunk_size` images at a time (0: the server's default)."""
        request = _wire.interpolate_request(
            model,
            start,
            end,
            steps,
            method=method,
            label=label,
            truncation=truncation,
            version=version,
            output=output,
            chunk_size=chunk_size,
        )
        return self._stream("InterpolateStream", request, timeout)
