"""What every rpc of either protocol shares: status codes, request metrics, lenient parsing.

`register` puts a transport's servicer on the gRPC server with each rpc wrapped: what it raised
becomes its status (a `server.errors.ServingError` by `errors.STATUS`, the only table of them;
anything else INTERNAL), it is counted and timed (`ganserve_requests_total`,
`ganserve_request_latency_seconds`, labelled with the model when the server has it), and
request bytes that do not parse reach it as a `Malformed` request, which `parsed` refuses as
INVALID_ARGUMENT (gRPC itself would answer UNKNOWN).
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
) -> None:
    """Wrap every rpc of `service` on `servicer` (see the module docstring) and register it
    with the generated `add_...Servicer_to_server` function `add`. `known(name)`: whether a
    model name may label the metrics (else "unknown": the label sets stay bounded)."""
    for rpc in service.methods:
        fn, field = getattr(servicer, rpc.name), _model_field(rpc)
        if rpc.server_streaming:
            wrapped = _streaming(rpc.name, fn, rpc.client_streaming, field, metrics, known)
        else:
            wrapped = _unary(rpc.name, fn, field, metrics, known)
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


def _record(
    metrics: Metrics, label: str, method: str, code: grpc.StatusCode, started: float
) -> None:
    metrics.requests_of(label, method, code.name).inc()
    metrics.request_latency_of(label, method).observe(time.perf_counter() - started)


def _unary(
    method: str, fn: Callable, field: str, metrics: Metrics, known: Callable[[str], bool]
) -> Callable:
    @functools.wraps(fn)
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, code = time.perf_counter(), OK
        try:
            return await fn(parsed(request), context)
        except BaseException as exc:
            code, message = _code(exc, context)
            await _end(exc, code, message, context)
        finally:
            name = getattr(request, field, "") if field else ""  # a Malformed request has none
            _record(metrics, name if known(name) else "unknown", method, code, started)

    return handler


def _streaming(
    method: str,
    fn: Callable,
    client_stream: bool,
    field: str,
    metrics: Metrics,
    known: Callable[[str], bool],
) -> Callable:
    @functools.wraps(fn)
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started, code = time.perf_counter(), OK
        label = "unknown"
        if not client_stream:
            name = getattr(request, field, "") if field else ""
            label = name if known(name) else "unknown"
        try:
            async for reply in fn(request if client_stream else parsed(request), context):
                label = reply.model
                yield reply
        except BaseException as exc:
            code, message = _code(exc, context)
            await _end(exc, code, message, context)
        finally:
            _record(metrics, label, method, code, started)

    return handler
