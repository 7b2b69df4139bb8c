"""`Client` and `AsyncClient`: the same methods, blocking and asyncio.

    with ganserve.Client("localhost:8500") as client:
        digits = client.generate("mnist-cgan", count=10, balanced=True, seed=7)
        digits.save_pngs("out/")

Every call is idempotent (an image is a function of model version, seed, index and label), so
UNAVAILABLE and RESOURCE_EXHAUSTED are retried with exponential backoff and full jitter, each
attempt on the next address (round-robin), within the call's `timeout`. A stream that fails
midway resumes after the last image it delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from ganserve import _wire
from ganserve.errors import RETRYABLE, InvalidArgument, from_rpc_error
from ganserve.types import Images, ModelInfo
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = 60.0
Labels = Sequence[int] | np.ndarray


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for UNAVAILABLE and RESOURCE_EXHAUSTED: attempt k waits a random time in
    [0, min(max_backoff, initial_backoff * multiplier**k)] ("full jitter")."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(
            0, min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        )


def _addresses(address: str | Sequence[str]) -> list[str]:
    found = [address] if isinstance(address, str) else list(address)
    if not found or not all(isinstance(a, str) and a for a in found):
        raise InvalidArgument("address: give 'host:port' or a list of them")
    return found


def _credentials(tls: bool | grpc.ChannelCredentials) -> grpc.ChannelCredentials | None:
    if tls is True:
        return grpc.ssl_channel_credentials()
    return tls or None


class _Base:
    def __init__(
        self,
        address: str | Sequence[str],
        *,
        timeout: float,
        retry: RetryPolicy,
        tls: bool | grpc.ChannelCredentials,
        max_message_bytes: int,
        seed: int | None,
    ) -> None:
        self.addresses = _addresses(address)
        self.timeout = timeout
        self.retry = retry
        self._rng = random.Random(seed)
        self._next = itertools.cycle(range(len(self.addresses)))
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._credentials = _credentials(tls)

    def _pick(self) -> int:
        return next(self._next)

    def _channel(self, address: str, aio: bool) -> Any:
        module = grpc.aio if aio else grpc
        if self._credentials:
            return module.secure_channel(address, self._credentials, self._options)
        return module.insecure_channel(address, self._options)


class Client(_Base):
    """Blocking client. `address` is "host:port" or a list of them (round-robin)."""

    def __init__(
        self,
        address: str | Sequence[str] = "localhost:8500",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        tls: bool | grpc.ChannelCredentials = False,
        max_message_bytes: int = 64 * 2**20,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            address,
            timeout=timeout,
            retry=retry,
            tls=tls,
            max_message_bytes=max_message_bytes,
            seed=seed,
        )
        self._channels = [self._channel(a, aio=False) for a in self.addresses]
        self._stubs = [pb_grpc.GeneratorStub(c) for c in self._channels]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        for attempt in itertools.count():
            stub = self._stubs[self._pick()]
            try:
                return getattr(stub, method)(
                    request, timeout=max(0.001, deadline - time.monotonic())
                )
            except grpc.RpcError as exc:
                self._backoff(exc, attempt, deadline)
        raise AssertionError("unreachable")

    def _backoff(self, exc: grpc.RpcError, attempt: int, deadline: float) -> None:
        wait = self.retry.delay(attempt, self._rng)
        if (
            exc.code() not in RETRYABLE
            or attempt + 1 >= self.retry.max_attempts  # type: ignore[attr-defined]
            or time.monotonic() + wait >= deadline
        ):
            raise from_rpc_error(exc) from None
        time.sleep(wait)

    def _stream(self, method: str, request: Any, timeout: float | None) -> Iterator[Images]:
        deadline = time.monotonic() + (timeout or self.timeout)
        received = 0
        for attempt in itertools.count():
            stub = self._stubs[self._pick()]
            rest = _wire.resume(request, received) if received else request
            try:
                for reply in getattr(stub, method)(
                    rest, timeout=max(0.001, deadline - time.monotonic())
                ):
                    batch = _wire.images(reply)
                    received += len(batch)
                    yield batch
                return
            except grpc.RpcError as exc:
                self._backoff(exc, attempt, deadline)

    # -- the API (AsyncClient mirrors it) -----------------------------------------------------

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        reply = self._call("ListModels", pb.ListModelsRequest(), timeout)
        return [_wire.model_info(m) for m in reply.models]

    def describe_model(
        self, model: str, *, version: int = 0, timeout: float | None = None
    ) -> ModelInfo:
        request = pb.DescribeModelRequest(model=model, version=version)
        return _wire.model_info(self._call("DescribeModel", request, timeout))

    def sample(
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
        """Unconditional images: `count` from (seed, start_index), or one per latent row."""
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
        return _wire.images(self._call("Sample", request, timeout))

    def generate(
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
        """Class-conditioned images: one label per image, one for all, or balanced."""
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
        return _wire.images(self._call("Generate", request, timeout))

    def translate(
        self,
        model: str,
        images: np.ndarray,
        *,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> Images:
        """Translations of uint8 [N, H, W, C] source images."""
        request = _wire.translate_request(model, images, version=version, output=output)
        return _wire.images(self._call("Translate", request, timeout))

    def translate_png(
        self,
        model: str,
        png: Sequence[bytes],
        *,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> Images:
        """Translations of PNG files (bytes, all of one size), decoded by the server."""
        request = pb.TranslateRequest(
            model=model, version=version, png=list(png), encoding=_wire.encoding(output)
        )
        return _wire.images(self._call("Translate", request, timeout))

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
    ) -> Iterator[Images]:
        """`count` images in order, `chunk_size` at a time (0: the server's default)."""
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
    ) -> Iterator[Images]:
        """Class-conditioned images in order, `chunk_size` at a time."""
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


class AsyncClient(_Base):
    """The asyncio client: the same methods as `Client`, awaited (streams: `async for`)."""

    def __init__(
        self,
        address: str | Sequence[str] = "localhost:8500",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        tls: bool | grpc.ChannelCredentials = False,
        max_message_bytes: int = 64 * 2**20,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            address,
            timeout=timeout,
            retry=retry,
            tls=tls,
            max_message_bytes=max_message_bytes,
            seed=seed,
        )
        self._channels = [self._channel(a, aio=True) for a in self.addresses]
        self._stubs = [pb_grpc.GeneratorStub(c) for c in self._channels]

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def _backoff(self, exc: grpc.RpcError, attempt: int, deadline: float) -> None:
        wait = self.retry.delay(attempt, self._rng)
        if (
            exc.code() not in RETRYABLE
            or attempt + 1 >= self.retry.max_attempts  # type: ignore[attr-defined]
            or time.monotonic() + wait >= deadline
        ):
            raise from_rpc_error(exc) from None
        await asyncio.sleep(wait)

    async def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        for attempt in itertools.count():
            stub = self._stubs[self._pick()]
            try:
                return await getattr(stub, method)(
                    request, timeout=max(0.001, deadline - time.monotonic())
                )
            except grpc.RpcError as exc:
                await self._backoff(exc, attempt, deadline)
        raise AssertionError("unreachable")

    async def _stream(
        self, method: str, request: Any, timeout: float | None
    ) -> AsyncIterator[Images]:
        deadline = time.monotonic() + (timeout or self.timeout)
        received = 0
        for attempt in itertools.count():
            stub = self._stubs[self._pick()]
            rest = _wire.resume(request, received) if received else request
            try:
                async for reply in getattr(stub, method)(
                    rest, timeout=max(0.001, deadline - time.monotonic())
                ):
                    batch = _wire.images(reply)
                    received += len(batch)
                    yield batch
                return
            except grpc.RpcError as exc:
                await self._backoff(exc, attempt, deadline)

    async def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        reply = await self._call("ListModels", pb.ListModelsRequest(), timeout)
        return [_wire.model_info(m) for m in reply.models]

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

    async def translate_png(
        self,
        model: str,
        png: Sequence[bytes],
        *,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> Images:
        """As `Client.translate_png`."""
        request = pb.TranslateRequest(
            model=model, version=version, png=list(png), encoding=_wire.encoding(output)
        )
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
