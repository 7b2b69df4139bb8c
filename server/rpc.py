"""What every rpc of either protocol shares: status codes, request metrics, lenient parsing.

`register` puts a transport's servicer on the gRPC server with each rpc wrapped: what it raised
becomes its status (a `server.errors.ServingError` by `errors.STATUS`, the only table of them;
anything else INTERNAL), it is counted and timed (`ganserve_requests_total`,
`ganserve_request_latency_seconds`, labelled with the model when the server has it), and
request bytes that do not parse reach it as a `Malformed` request, which `parsed` refuses as
INVALID_ARGUMENT (gRPC itself would answer UNKNOWN). With tracing on (`server.tracing`), each
rpc also gets its span, current while it runs, and its latency observation an exemplar.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError

from ganserve.server.errors import InvalidRequest, ServingError, status_of
from ganserve.server.metrics import Metrics
from ganserve.server.tracing import Call, Tracing

OK = grpc.StatusCode.OK


class Malformed:
    """A request whose bytes did not parse as its message."""

    model = ""  # the metrics label of a request that names no model

    def __init__(self, message: str, error: Exception) -> None:
        self.message, self.error = message, error


def parsed(request: Any) -> Any:
    """The request, or INVALID_ARGUMENT if its bytes did not parse."""
    if isinstance(request, Malformed):
        raise InvalidRequest(f"the request is not a valid {request.message}: {request.error}")
    return request


def _lenient(parse: Callable[[bytes], Any], message: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Malformed(message, exc)

    return deserialize


class _Lenient:
    """Stands in for a server while the generated code registers its handlers, and registers
    them with deserializers that turn unparsable bytes into Malformed requests."""

    def __init__(self, server: grpc.aio.Server, file: FileDescriptor) -> None:
        self.server = server
        self.file = file

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The generated code registers each method twice: the registered set suffices."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        methods = self.file.services_by_name[service.rsplit(".", 1)[1]].methods_by_name
        lenient = {}
        for method, handler in handlers.items():
            parse = _lenient(handler.request_deserializer, methods[method].input_type.name)
            lenient[method] = handler._replace(request_deserializer=parse)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, lenient),)
        )
        self.server.add_registered_method_handlers(service, lenient)


def register(
    server: grpc.aio.Server,
    servicer: Any,
    service: ServiceDescriptor,
    add: Callable[[Any, Any], None],
    metrics: Metrics,
    known: Callable[[str], bool],
    tracing: Tracing | None = None,
) -> None:
    """Wrap every rpc of `service` on `servicer` (see the module docstring) and register it
    with the generated `add_...Servicer_to_server` function `add`. `known(name)`: whether a
    model name may label the metrics (else "unknown": the label sets stay bounded).
    `tracing`: each rpc gets its span (`server.tracing`), and its latency an exemplar."""
    for rpc in service.methods:
        fn, field = getattr(servicer, rpc.name), _model_field(rpc)
        rpc_ = _Rpc(rpc.name, f"/{service.full_name}/{rpc.name}", field, metrics, known, tracing)
        if rpc.server_streaming:
            wrapped = _streaming(rpc_, fn, rpc.client_streaming)
        else:
            wrapped = _unary(rpc_, fn)
        setattr(servicer, rpc.name, wrapped)
    add(servicer, _Lenient(server, service.file))


def _model_field(rpc: Any) -> str:
    """The request field that names the model: `model` (ganserve.v1), `model_name` or `name`
    (OIP); "" for an rpc about no model. Looked up once per rpc, when it is wrapped."""
    fields = rpc.input_type.fields_by_name
    return next((f for f in ("model", "model_name", "name") if f in fields), "")


def _code(error: BaseException, context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str]:
    """The status an rpc that raised `error` ends with, and its message."""
    if isinstance(error, ServingError):
        return status_of(error), str(error)
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        # GeneratorExit: grpc closed a stream whose reply it could no longer send (the client
        # cancelled while flow control held the server); either way the call did not finish
        left = context.time_remaining()
        expired = left is not None and left <= 0
        code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        return code, ""
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"


_GONE = (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)


async def _end(
    error: BaseException, code: grpc.StatusCode, message: str, context: grpc.aio.ServicerContext
) -> None:
    """End an rpc that raised `error` with `code`: abort with it, or, when the caller went
    away, raise `error` on. (Never returns.)"""
    if code in _GONE:
        raise error
    await context.abort(code, message)


class _Rpc:
    """One rpc's name, path and what its wrapper records with."""

    __slots__ = ("field", "known", "method", "metrics", "path", "tracing")

    def __init__(
        self,
        method: str,
        path: str,
        field: str,
        metrics: Metrics,
        known: Callable[[str], bool],
        tracing: Tracing | None,
    ) -> None:
        self.method, self.path, self.field = method, path, field
        self.metrics, self.known, self.tracing = metrics, known, tracing

    def label(self, request: Any) -> str:
        """The model label of `request` ("unknown" for a name the server does not have)."""
        name = getattr(request, self.field, "") if self.field else ""  # a Malformed has none
        return name if self.known(name) else "unknown"

    def trace(self, request: Any, context: grpc.aio.ServicerContext, stream: bool) -> Call | None:
        if self.tracing is None:
            return None
        name = getattr(request, self.field, "") if self.field else ""
        metadata = context.invocation_metadata()
        return self.tracing.start_call(self.path, metadata, str(name)[:256], stream)

    def record(
        self, label: str, code: grpc.StatusCode, message: str, started: float, call: Call | None
    ) -> None:
        """Count and time the finished rpc; end its span."""
        self.metrics.requests_of(label, self.method, code.name).inc()
        exemplar = call.exemplar() if call is not None else None
        latency = self.metrics.request_latency_of(label, self.method)
        latency.observe(time.perf_counter() - started, exemplar)
        if call is not None:
            call.end(code.value[0], code.name, message)


def _unary(rpc: _Rpc, fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, code, message = time.perf_counter(), OK, ""
        call = rpc.trace(request, context, stream=False)
        try:
            return await fn(parsed(request), context)
        except BaseException as exc:
            code, message = _code(exc, context)
            await _end(exc, code, message, context)
        finally:
            rpc.record(rpc.label(request), code, message, started, call)

    return handler


def _streaming(rpc: _Rpc, fn: Callable, client_stream: bool) -> Callable:
    @functools.wraps(fn)
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started, code, message = time.perf_counter(), OK, ""
        label = "unknown" if client_stream else rpc.label(request)
        call = rpc.trace(None if client_stream else request, context, stream=True)
        try:
            async for reply in fn(request if client_stream else parsed(request), context):
                label = reply.model
                yield reply
        except BaseException as exc:
            code, message = _code(exc, context)
            await _end(exc, code, message, context)
        finally:
            rpc.record(label, code, message, started, call)

    return handler
