"""What `Client` and `AsyncClient` share, doing no I/O: addresses, channels, stubs, the token's
metadata, the retry decision, and the model-control messages."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ganserve import channels, tracecontext
from ganserve.oip import grpc_service_pb2_grpc as oip_grpc
from ganserve.retry import DEFAULT_RETRY, RetryPolicy
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = 60.0


class Base:
    """Both clients' state; the subclasses add the calls, blocking or awaited."""

    _aio = False

    def __init__(
        self,
        address: str | Sequence[str] = "localhost:8500",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        tls: channels.Tls = False,
        token: str | None = None,
        max_message_bytes: int = 64 * 2**20,
        seed: int | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> None:
        self.addresses = channels.addresses(address)
        self._metadata = channels.token_metadata(token)
        # sent when no span is current (`ganserve.tracecontext`)
        self._trace_context = dict(trace_context) if trace_context else None
        self.timeout = timeout
        self.retry = retry
        self._rng = random.Random(seed)
        self.targets, self._channels = channels.open_channels(
            self.addresses, tls, max_message_bytes, aio=self._aio
        )
        # ganserve.v1 for images, the Open Inference Protocol for model control
        self._stubs = {
            "v1": [pb_grpc.GeneratorStub(c) for c in self._channels],
            "oip": [oip_grpc.GRPCInferenceServiceStub(c) for c in self._channels],
        }
        self._next = itertools.cycle(range(len(self._channels)))

    def _attempt(self, deadline: float, service: str = "v1") -> tuple[Any, float]:
        """The next channel's stub of `service` (there is one channel unless DNS names were
        listed) and the time left for this attempt."""
        return self._stubs[service][next(self._next)], max(0.001, deadline - time.monotonic())

    def _call_metadata(self) -> tracecontext.Metadata:
        """The metadata of one call: the token's, and the trace context (tracecontext)."""
        return tracecontext.metadata(self._metadata, self._trace_context)

    def _wait_before_retry(self, exc: Any, attempt: int, deadline: float) -> float:
        """The backoff before the next attempt, or the SDK error raised (see `RetryPolicy`)."""
        return self.retry.wait(exc, attempt, deadline, self._rng)
