"""Distributed tracing with OpenTelemetry: off unless the standard OTEL_* variables turn it on.

`OTEL_TRACES_EXPORTER=otlp` turns it on (`console` prints the spans to stdout, for a look by
hand; a comma-separated list takes both). ganserve then reads the SDK's standard variables:
OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _PROTOCOL (`grpc`, the default, or `http/protobuf`),
_HEADERS, _INSECURE, _TIMEOUT and _CERTIFICATE; OTEL_TRACES_SAMPLER(_ARG) (by default a
caller's sampling decision is followed, and a call without one is sampled); OTEL_SERVICE_NAME
(default "ganserve") and OTEL_RESOURCE_ATTRIBUTES; OTEL_BSP_* for the batching of exports;
OTEL_PROPAGATORS (default W3C trace context and baggage). OTEL_SDK_DISABLED=true turns it off.
Unset, ganserve makes no span and imports no OpenTelemetry module: each rpc pays a None check,
each step below a context-variable lookup.

What a traced server records (docs/serving.md has the table):
- per rpc, a SERVER span `<package.Service>/<Method>` whose parent is the caller's span when the
  call's metadata carries W3C trace context (`traceparent`), with rpc.* attributes, the model,
  and the status code; it is current (`current()`) while the rpc's handler runs;
- under it, `queue` (from a piece of work's arrival in the batcher to its batch's start) and
  `encode` (the reply's encoding) spans;
- per batch, one `batch` span (size, requests, instance, whether it ran on the event loop)
  under the first request it served and linked to every request span it served;
- a stream rpc gets its one span with a `chunk` event per message, and no child spans: no span
  per image or per chunk.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

log = logging.getLogger("ganserve.tracing")
EXPORTERS = ("otlp", "console")
PROTOCOLS = ("grpc", "http/protobuf")
SERVICE_NAME = "ganserve"
# gRPC status codes that mark a server span as an error (OpenTelemetry's rpc conventions);
# the others (INVALID_ARGUMENT, NOT_FOUND, ...) are the caller's, and the span stays unset
SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
_CURRENT: ContextVar[Call | None] = ContextVar("ganserve_traced_call", default=None)


def settings(environ: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
    """(the exporters, the OTLP protocol) that `environ` asks for; no exporters: off.
    ValueError naming the variable for a value ganserve cannot honour (checked at start)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return (), ""
    text = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
    for name in names:
        if name not in EXPORTERS:
            raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r}; one of otlp, console, none")
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if "otlp" in names and protocol not in PROTOCOLS:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r}; grpc or http/protobuf")
    return names, protocol


def current() -> Call | None:
    """The traced rpc whose handler is running here, if any."""
    return _CURRENT.get()


class Tracing:
    """One server's tracer provider and exporters (its own, not OpenTelemetry's global one,
    so servers in one process keep their spans apart)."""

    def __init__(self, exporters: Sequence[str], protocol: str) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for name in exporters:
            if name == "console":
                from opentelemetry.sdk.trace.export import ConsoleSpanExporter

                self.provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            elif protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )

                self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpExporter,
                )

                self.provider.add_span_processor(BatchSpanProcessor(HttpExporter()))
        self.tracer = self.provider.get_tracer("ganserve.server")
        self._trace, self._propagate = trace, propagate
        self.exporters = tuple(exporters)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Tracing | None:
        """The server's tracing as `environ` asks (module docstring), None when off."""
        exporters, protocol = settings(environ)
        return cls(exporters, protocol) if exporters else None

    def start_call(
        self, path: str, metadata: Sequence[tuple[str, Any]] | None, model: str, stream: bool
    ) -> Call:
        """The span of rpc `path` ("/package.Service/Method"), current until `Call.end`."""
        carrier = {k: v for k, v in metadata or () if k in ("traceparent", "tracestate")}
        parent = self._propagate.extract(carrier) if carrier else None
        service, _, method = path.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        if model:
            attributes["ganserve.model"] = model
        span = self.tracer.start_span(
            f"{service}/{method}",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes=attributes,
        )
        return Call(self, span, stream)

    def batch_span(self, parent: Call, calls: Sequence[Call], **attributes: Any) -> Any:
        """A started `batch` span under `parent`, linked to every call in `calls`."""
        links = [self._trace.Link(c.span.get_span_context()) for c in calls]
        return self.tracer.start_span(
            "batch", context=parent.parent, links=links, attributes=attributes
        )

    def shutdown(self) -> None:
        """Export what is left, then stop the exporters."""
        self.provider.shutdown()


class Call:
    """One traced rpc: its span, the context its child spans start under, and whether it is
    a stream (which records events, not child spans)."""

    __slots__ = ("_token", "parent", "sampled", "span", "stream", "tracing")

    def __init__(self, tracing: Tracing, span: Any, stream: bool) -> None:
        self.tracing, self.span, self.stream = tracing, span, stream
        self.parent = tracing._trace.set_span_in_context(span)
        self.sampled = span.get_span_context().trace_flags.sampled
        self._token = _CURRENT.set(self)

    def ids(self) -> tuple[str, str]:
        """(trace id, span id) in hex, as logs, exemplars and trace UIs show them."""
        c = self.span.get_span_context()
        return format(c.trace_id, "032x"), format(c.span_id, "016x")

    def exemplar(self) -> dict[str, str] | None:
        """The labels of a Prometheus exemplar pointing at this call's trace, if sampled."""
        if not self.sampled:
            return None
        trace_id, span_id = self.ids()
        return {"trace_id": trace_id, "span_id": span_id}

    def add_span(self, name: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
        """A finished child span `name`, from `start_ns` to `end_ns` (time.time_ns())."""
        if self.stream or not self.sampled:
            return
        span = self.tracing.tracer.start_span(
            name, context=self.parent, attributes=attributes, start_time=start_ns
        )
        span.end(end_time=end_ns)

    def end(self, code: int, name: str, message: str = "") -> None:
        """Finish the span with the rpc's status code (its number and name)."""
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("rpc.grpc.status_code", code)
        if name in SERVER_ERRORS:
            self.span.set_status(Status(StatusCode.ERROR, f"{name}: {message}"[:1024]))
        self.span.end()
        with contextlib.suppress(ValueError):  # ended in another context (a closed stream)
            _CURRENT.reset(self._token)


@contextlib.contextmanager
def _child(call: Call, name: str, attributes: dict[str, Any]) -> Iterator[None]:
    started = time.time_ns()
    try:
        yield
    finally:
        call.add_span(name, started, time.time_ns(), **attributes)


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[None]:
    """`with tracing.span("encode", ...)`: a child span of the current traced unary rpc; a
    shared no-op when tracing is off or the rpc is a stream."""
    call = _CURRENT.get()
    if call is None or call.stream or not call.sampled:
        return _NOTHING
    return _child(call, name, attributes)


def event(name: str, **attributes: Any) -> None:
    """An event on the current traced rpc's span (a stream's `chunk`), if any."""
    call = _CURRENT.get()
    if call is not None and call.sampled:
        call.span.add_event(name, attributes)


_NOTHING = contextlib.nullcontext()
