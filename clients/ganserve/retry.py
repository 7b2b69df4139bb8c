"""The clients' retry policy: which failures are retried, and how long to wait before each.

Every call is idempotent (an image is a function of model version, seed, index and label), so
UNAVAILABLE, RESOURCE_EXHAUSTED and a CANCELLED the caller did not ask for are retried with
exponential backoff and full jitter within the call's `timeout`; a stream that fails midway
resumes after the last image it delivered (the clients' `_stream`).

Retries stay the SDK's rather than gRPC's `retryPolicy`: streams must resume after their last
image, which gRPC cannot do; gRPC caps attempts at 5 and does not retry a request over its
256 KiB retry buffer (a Translate batch); and two layers would multiply the attempts. gRPC's
transparent retry of calls that never reached a server stays on.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc

from ganserve.errors import RETRYABLE, from_rpc_error


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for UNAVAILABLE, RESOURCE_EXHAUSTED and CANCELLED: attempt k waits a random time in
    [0, min(max_backoff, initial_backoff * multiplier**k)] ("full jitter")."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait before attempt `attempt + 1`, drawn from `rng`."""
        return rng.uniform(
            0, min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        )

    def wait(self, exc: grpc.RpcError, attempt: int, deadline: float, rng: random.Random) -> float:
        """How long to back off before the next attempt; raises the SDK error when the failure
        is not retryable, the attempts are used up, or the wait would pass the deadline
        (`time.monotonic()` seconds)."""
        wait = self.delay(attempt, rng)
        if (
            exc.code() not in RETRYABLE  # type: ignore[attr-defined]
            or attempt + 1 >= self.max_attempts
            or time.monotonic() + wait >= deadline
        ):
            raise from_rpc_error(exc) from None
        return wait


DEFAULT_RETRY = RetryPolicy()
