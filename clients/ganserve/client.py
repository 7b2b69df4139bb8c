"""`Client` and `AsyncClient`: the same methods, blocking and asyncio.

    with ganserve.Client("localhost:8500") as client:
        digits = client.generate("mnist-cgan", count=10, balanced=True, seed=7)
        digits.save_pngs("out/")

How a client reaches its servers (balancing, TLS, the token) is `ganserve.channels`'s; which
failures it retries and how long it waits, `ganserve.retry`'s. Both clients share `_base.Base`
and mirror each other method by method; `AsyncClient` lives in `ganserve.async_client`.
Model control (`repository_index`, `load_model`, `unload_model`) goes over the Open Inference
Protocol's repository extension, on the same channels.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np

from ganserve import _wire
from ganserve._base import DEFAULT_TIMEOUT, Base
from ganserve._wire import Point
from ganserve.async_client import AsyncClient
from ganserve.oip import grpc_service_pb2 as oip
from ganserve.retry import RetryPolicy
from ganserve.types import Images, Labels, ModelInfo, RepositoryModel
from ganserve.v1 import ganserve_pb2 as pb

__all__ = ["DEFAULT_TIMEOUT", "AsyncClient", "Client", "RetryPolicy"]


class Client(Base):
    """Blocking client. `address` is one gRPC target ("host:port", "dns:///name:port") or a
    list of "host:port" addresses, balanced by gRPC's round_robin (see `ganserve.channels`)."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def _call(self, method: str, request: Any, timeout: float | None, service: str = "v1") -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        for attempt in itertools.count():
            stub, left = self._attempt(deadline, service)
            try:
                return getattr(stub, method)(request, timeout=left, metadata=self._call_metadata())
            except grpc.RpcError as exc:
                time.sleep(self._wait_before_retry(exc, attempt, deadline))
        raise AssertionError("unreachable")

    def _stream(self, method: str, request: Any, timeout: float | None) -> Iterator[Images]:
        deadline = time.monotonic() + (timeout or self.timeout)
        received = 0
        for attempt in itertools.count():
            stub, left = self._attempt(deadline)
            resumed = _wire.resume(request, received)
            call = getattr(stub, method)(resumed, timeout=left, metadata=self._call_metadata())
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

    def repository_index(
        self, *, ready: bool = False, timeout: float | None = None
    ) -> list[RepositoryModel]:
        """Every version of every model the server's repository knows (`ready`: only those
        ready to serve), over the Open Inference Protocol's RepositoryIndex."""
        request = oip.RepositoryIndexRequest(ready=ready)
        return _wire.repository_models(self._call("RepositoryIndex", request, timeout, "oip"))

    def load_model(self, model: str, *, timeout: float | None = None) -> None:
        """Load (or reload) `model` from the server's repository folder; the server must run
        `--model-control explicit` (else it answers UNAVAILABLE: `Unavailable`, once retried)."""
        request = oip.RepositoryModelLoadRequest(model_name=model)
        self._call("RepositoryModelLoad", request, timeout, "oip")

    def unload_model(self, model: str, *, timeout: float | None = None) -> None:
        """Stop serving every version of `model` (calls in flight finish first); the server
        must run `--model-control explicit`."""
        request = oip.RepositoryModelUnloadRequest(model_name=model)
        self._call("RepositoryModelUnload", request, timeout, "oip")

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

    def inpaint(
        self,
        model: str,
        images: np.ndarray,
        masks: np.ndarray,
        *,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
    ) -> Images:
        """An inpainting model's fills of uint8 [N, H, W, C] `images` where `masks` (bool, or
        uint8 0 / 255, [N, H, W]) say so; pixels outside the holes come back unchanged."""
        request = _wire.translate_request(
            model, images, version=version, output=output, masks=masks
        )
        return _wire.images(self._call("Translate", request, timeout))

    def translate_png(
        self,
        model: str,
        png: Sequence[bytes],
        *,
        version: int = 0,
        output: str = "uint8",
        timeout: float | None = None,
        mask_png: Sequence[bytes] | None = None,
    ) -> Images:
        """Translations of PNG files (bytes, all of one size), decoded by the server."""
        request = pb.TranslateRequest(
            model=model, version=version, png=list(png), encoding=_wire.encoding(output)
        )
        if mask_png is not None:  # an inpainting model's masks, one greyscale PNG per image
            request.mask_png.extend(mask_png)
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

    def interpolate(
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
        """`steps` images along the path from `start` to `end` (each a seeded image's
        `(seed, index)` or a float32 latent [nz]), both included, "spherical" or "linear";
        `label`: the class of every image (conditional models). The latents are
        `ganserve.latent.path_latents`'s, so a caller can make them locally."""
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
        return _wire.images(self._call("Interpolate", request, timeout))

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
    ) -> Iterator[Images]:
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
