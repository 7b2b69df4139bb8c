"""Every way a call can fail, one exception tree, and the one table of their status codes.

The request layer and both transports raise these; `server.rpc` alone turns them into gRPC
status codes, through `STATUS`. Each class mirrors the SDK's class for the same code
(`ganserve.errors`), so what the server raises is what a caller catches:

| server                  | status               | SDK                 |
|-------------------------|----------------------|---------------------|
| InvalidRequest          | INVALID_ARGUMENT     | InvalidArgument     |
| ModelNotFound           | NOT_FOUND            | NotFound            |
| ModelUnavailable        | UNAVAILABLE          | Unavailable         |
| Draining                | UNAVAILABLE          | Unavailable         |
| ModelControlOff         | UNAVAILABLE          | Unavailable         |
| WrongKind               | FAILED_PRECONDITION  | WrongModelKind      |
| NotLoadable             | FAILED_PRECONDITION  | WrongModelKind      |
| QueueFull               | RESOURCE_EXHAUSTED   | Overloaded          |
| Unauthenticated         | UNAUTHENTICATED      | Unauthenticated     |

Anything else an rpc raises is a bug: INTERNAL, with the exception's type and message.
"""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """Base of every failure a call reports to its caller; the message names the field or the
    model and says what is allowed."""


class InvalidRequest(ServingError, ValueError):
    """A field is missing, malformed or out of range."""


class ModelNotFound(ServingError, LookupError):
    """No such model or version in the repository."""


class ModelUnavailable(ServingError):
    """The version exists but is not ready (still loading, failed to load, or unloaded)."""


class Draining(ServingError):
    """The server is shutting down: retry elsewhere."""


class ModelControlOff(ServingError):
    """A model-control rpc on a server not started with --model-control explicit."""


class WrongKind(ServingError):
    """The model's kind does not offer this call (e.g. Sample on a conditional model)."""


class NotLoadable(ServingError):
    """A load on request found nothing it could load (a broken repository, no loadable
    version)."""


class QueueFull(ServingError):
    """The model's queue holds max_queue_size images already: retry later."""


class Unauthenticated(ServingError):
    """No accepted bearer token (`server.security`)."""


STATUS: dict[type[ServingError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelUnavailable: grpc.StatusCode.UNAVAILABLE,
    Draining: grpc.StatusCode.UNAVAILABLE,
    ModelControlOff: grpc.StatusCode.UNAVAILABLE,
    WrongKind: grpc.StatusCode.FAILED_PRECONDITION,
    NotLoadable: grpc.StatusCode.FAILED_PRECONDITION,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}


def status_of(error: ServingError) -> grpc.StatusCode:
    """The status code a call that raised `error` ends with."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL  # a ServingError subclass missing from the table: a bug
