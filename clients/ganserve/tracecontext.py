"""W3C trace context on the SDK's calls, so that a trace crosses from the caller into ganserve.

When the caller has an active OpenTelemetry span (the `opentelemetry-api` package installed and
a span current where the call is made), every call of `Client` and `AsyncClient`, and so of the
bulk jobs and `ganserve.data`, carries its `traceparent` (and `tracestate`) metadata, through the
process's configured propagator (OTEL_PROPAGATORS; W3C trace context by default); the server's
spans of that call become its children. Without the package, or without a span, nothing is sent
and nothing is imported but this module. A client may also be given a fixed `trace_context`
(what `capture()` returned elsewhere) for calls made where no span is current: a DataLoader
worker continues the trace that was current where its dataset was built.
"""

from __future__ import annotations

from collections.abc import Mapping

try:
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # the SDK needs no OpenTelemetry; without it, no context is sent
    _propagate = _trace = None  # type: ignore[assignment]

Metadata = tuple[tuple[str, str], ...] | None


def capture() -> dict[str, str]:
    """The current span's context as metadata entries ({} when no span is current)."""
    if _trace is None or not _trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return carrier


def metadata(base: Metadata, fixed: Mapping[str, str] | None = None) -> Metadata:
    """`base` plus the current span's context, else `fixed`'s entries, if either has any."""
    extra = capture() or fixed
    if not extra:
        return base
    return (*(base or ()), *extra.items())
