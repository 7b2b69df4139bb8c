"""`Client` and `AsyncClient`: the same methods, blocking and asyncio.

    with ganserve.Client("localhost:8500") as client:
        digits = client.generate("mnist-cgan", count=10, balanced=True, seed=7)
        digits.save_pngs("out/")

Every call is idempotent (an image is a function of model version, seed, index and label), so
UNAVAILABLE, RESOURCE_EXHAUSTED and a CANCELLED the caller did not ask for are retried with
exponential backoff and full jitter within the call's `timeout`; a stream that fails midway
resumes after the last image it delivered.

Balancing is gRPC's own `round_robin` policy: give one target that resolves to every replica
(`dns:///ganserve-headless.ns.svc.cluster.local:8500`, or `ipv4:10.0.0.1:8500,10.0.0.2:8500`)
and each call goes to the next ready backend, one that goes away is dropped, and a retry lands
on another. A list of IP `host:port` addresses becomes one such `ipv4:`/`ipv6:` target. Only
what one gRPC channel cannot hold (several DNS names, which gRPC Python cannot resolve into one
channel) gets a channel each, and then each attempt takes the next channel.

Retries stay the SDK's rather than gRPC's `retryPolicy`: streams must resume after their last
image, which gRPC cannot do; gRPC caps attempts at 5 and does not retry a request over its
256 KiB retry buffer (a Translate batch); and two layers would multiply the attempts. gRPC's
transparent retry of calls that never reached a server stays on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ganserve import _wire
from ganserve.errors import RETRYABLE, InvalidArgument, from_rpc_error
from ganserve.oip import grpc_service_pb2 as oip
from ganserve.oip import grpc_service_pb2_grpc as oip_grpc
from ganserve.types import Images, ModelInfo, RepositoryModel
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = 60.0
Labels = Sequence[int] | np.ndarray


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for UNAVAILABLE, RESOURCE_EXHAUSTED and CANCELLED: attempt k waits a random time in
    [0, min(max_backoff, initial_backoff * multiplier**k)] ("full jitter")."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(
            0, min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        )


ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def _addresses(address: str | Sequence[str]) -> list[str]:
    found = [address] if isinstance(address, str) else list(address)
    if not found or not all(isinstance(a, str) and a for a in found):
        raise InvalidArgument("address: give 'host:port' or a list of them")
    return found


def _ip_literal(address: str) -> tuple[str, str] | None:
    """("ipv4" or "ipv6", the host) for an IP `host:port` (`[v6]:port`), else None."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        ip = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if ip.version == 6 and not host.startswith("["):
        return None
    return f"ipv{ip.version}", str(ip)


def _targets(addresses: list[str], tls: bool) -> list[tuple[str, str | None]]:
    """The fewest gRPC channel targets that reach `addresses`, each with the authority its
    TLS check needs (None: gRPC's default). IP `host:port` addresses of one family join one
    `ipv4:a,b` (`ipv6:`) target that `round_robin` balances; under TLS only when they share
    one host, since every backend of a channel is verified against the same name. Anything
    else (a DNS name, a `dns:///` or other scheme target) is a channel of its own."""
    if len(addresses) == 1:
        return [(addresses[0], None)]
    families: dict[str, list[str]] = {}
    hosts: dict[str, set[str]] = {}
    alone: list[tuple[str, str | None]] = []
    for address in addresses:
        literal = _ip_literal(address)
        if literal is None:
            alone.append((address, None))
            continue
        families.setdefault(literal[0], []).append(address)
        hosts.setdefault(literal[0], set()).add(literal[1])
    joined: list[tuple[str, str | None]] = []
    for family, members in families.items():
        if tls and len(hosts[family]) > 1:
            alone += [(a, None) for a in members]
        elif len(members) == 1:
            joined.append((members[0], None))
        else:
            # gRPC names such a channel after the whole list: TLS is checked against the one
            # host the members share (plaintext needs no authority, and may mix hosts)
            authority = None
            if len(hosts[family]) == 1:
                (host,) = hosts[family]
                authority = f"[{host}]" if family == "ipv6" else host
            joined.append((f"{family}:{','.join(members)}", authority))
    return joined + alone


def read_token(path: str | Path) -> str:
    """The bearer token a file holds (the file's text, stripped): how the SDK's commands read
    --token-file. InvalidArgument naming the file when it cannot be read or is empty."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidArgument(f"--token-file: cannot read {path} ({reason})") from None
    if not token:
        raise InvalidArgument(f"--token-file: {path} is empty")
    return token


def _credentials(
    tls: bool | str | Path | grpc.ChannelCredentials,
) -> grpc.ChannelCredentials | None:
    """True: TLS against the system's CAs; a path: TLS against that PEM CA; credentials as
    they are (a client certificate for mutual TLS: `grpc.ssl_channel_credentials(ca, key,
    cert)`); False: plaintext."""
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, str | Path):
        try:
            return grpc.ssl_channel_credentials(root_certificates=Path(tls).read_bytes())
        except OSError as exc:
            raise InvalidArgument(f"tls: cannot read the CA file {tls} ({exc.strerror})") from None
    return tls or None


class _Base:
    """What both clients share: addresses, channels and the retry decision."""

    _aio = False

    def __init__(
        self,
        address: str | Sequence[str] = "localhost:8500",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        tls: bool | str | Path | grpc.ChannelCredentials = False,
        token: str | None = None,
        max_message_bytes: int = 64 * 2**20,
        seed: int | None = None,
    ) -> None:
        self.addresses = _addresses(address)
        # the bearer token travels as metadata on every call (servers run --auth-token-file)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout
        self.retry = retry
        self._rng = random.Random(seed)
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # gRPC's own balancing within one address: a target that resolves to several
            # backends (dns:///a-headless-service:8500, ipv4:10.0.0.1:8500,10.0.0.2:8500)
            # spreads its calls over all of them, and drops those that go away
            ("grpc.service_config", ROUND_ROBIN),
        ]
        credentials = _credentials(tls)
        module = grpc.aio if self._aio else grpc
        self.targets = _targets(self.addresses, credentials is not None)
        self._channels = []
        for target, authority in self.targets:
            extra = [("grpc.default_authority", authority)] if authority else []
            self._channels.append(
                module.secure_channel(target, credentials, options + extra)
                if credentials
                else module.insecure_channel(target, options + extra)
            )
        self._stubs = [pb_grpc.GeneratorStub(c) for c in self._channels]
        # model control is the Open Inference Protocol's repository extension, on the same port
        self._oip_stubs = [oip_grpc.GRPCInferenceServiceStub(c) for c in self._channels]
        self._next = itertools.cycle(range(len(self._stubs)))

    def _attempt(self, deadline: float, oip: bool = False) -> tuple[Any, float]:
        """The next channel's stub (there is one unless DNS names were listed) and the time
        left for this attempt."""
        stubs = self._oip_stubs if oip else self._stubs
        return stubs[next(self._next)], max(0.001, deadline - time.monotonic())

    @staticmethod
    def _index(reply: Any) -> list[RepositoryModel]:
        return [RepositoryModel(m.name, m.version, m.state, m.reason) for m in reply.models]

    def _wait_before_retry(self, exc: grpc.RpcError, attempt: int, deadline: float) -> float:
        """How long to back off before the next attempt; raises the SDK error when the failure
        is not retryable, the attempts are used up, or the wait would pass the deadline."""
        wait = self.retry.delay(attempt, self._rng)
        if (
            exc.code() not in RETRYABLE  # type: ignore[attr-defined]
            or attempt + 1 >= self.retry.max_attempts
            or time.monotonic() + wait >= deadline
        ):
            raise from_rpc_error(exc) from None
        return wait


class Client(_Base):
    """Blocking client. `address` is one gRPC target ("host:port", "dns:///name:port") or a
    list of "host:port" addresses, balanced by gRPC's round_robin (see the module's doc)."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def _call(self, method: str, request: Any, timeout: float | None, oip: bool = False) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        for attempt in itertools.count():
            stub, left = self._attempt(deadline, oip)
            try:
                return getattr(stub, method)(request, timeout=left, metadata=self._metadata)
            except grpc.RpcError as exc:
                time.sleep(self._wait_before_retry(exc, attempt, deadline))
        raise AssertionError("unreachable")

    def _stream(self, method: str, request: Any, timeout: float | None) -> Iterator[Images]:
        deadline = time.monotonic() + (timeout or self.timeout)
        received = 0
        for attempt in itertools.count():
            stub, left = self._attempt(deadline)
            resumed = _wire.resume(request, received)
            call = getattr(stub, method)(resumed, timeout=left, metadata=self._metadata)
            try:
                for reply in call:
                    batch = _wire.images(reply)
                    received += len(batch)
                    yield batch
                return
            except grpc.RpcError as exc:
                if received >= _wire.total(request):
                    return  # every image arrived before the status broke: nothing to resume
                time.sleep(self._wait_before_retry(exc, attempt, deadline))
            finally:
                call.cancel()  # a reader that stopped early: the server stops computing now

    # -- the API (AsyncClient mirrors it) -----------------------------------------------------

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        reply = self._call("ListModels", pb.ListModelsRequest(), timeout)
        return [_wire.model_info(m) for m in reply.models]

    # -- model control (the server runs --model-control explicit for load and unload) --------

    def repository_index(
        self, *, ready: bool = False, timeout: float | None = None
    ) -> list[RepositoryModel]:
        """Every version in the server's repository (only ready ones with `ready`)."""
        reply = self._call(
            "RepositoryIndex", oip.RepositoryIndexRequest(ready=ready), timeout, True
        )
        return self._index(reply)

    def load_model(self, name: str, *, timeout: float | None = None) -> None:
        """Load (or reload) model `name` from the server's repository folder; returns once a
        version of it serves."""
        request = oip.RepositoryModelLoadRequest(model_name=name)
        self._call("RepositoryModelLoad", request, timeout, True)

    def unload_model(self, name: str, *, timeout: float | None = None) -> None:
        """Stop serving every version of `name` (calls in flight finish first)."""
        request = oip.RepositoryModelUnloadRequest(model_name=name)
        self._call("RepositoryModelUnload", request, timeout, True)

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

    _aio = True

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def _call(
        self, method: str, request: Any, timeout: float | None, oip: bool = False
    ) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        for attempt in itertools.count():
            stub, left = self._attempt(deadline, oip)
            try:
                return await getattr(stub, method)(request, timeout=left, metadata=self._metadata)
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
                _wire.resume(request, received), timeout=left, metadata=self._metadata
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
        """Every version in the server's repository (only ready ones with `ready`)."""
        request = oip.RepositoryIndexRequest(ready=ready)
        return self._index(await self._call("RepositoryIndex", request, timeout, True))

    async def load_model(self, name: str, *, timeout: float | None = None) -> None:
        """Load (or reload) model `name`; returns once a version of it serves."""
        request = oip.RepositoryModelLoadRequest(model_name=name)
        await self._call("RepositoryModelLoad", request, timeout, True)

    async def unload_model(self, name: str, *, timeout: float | None = None) -> None:
        """Stop serving every version of `name` (calls in flight finish first)."""
        request = oip.RepositoryModelUnloadRequest(model_name=name)
        await self._call("RepositoryModelUnload", request, timeout, True)

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
