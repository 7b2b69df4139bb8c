"""One exception tree for every failure the SDK reports: the service's, mapped from gRPC status
codes in one table, and the bulk jobs' own (no status code: they happen on the caller's side).

    GanserveError
    ├── InvalidArgument (ValueError)     INVALID_ARGUMENT, or a bad argument to an SDK call
    ├── NotFound (LookupError)           NOT_FOUND
    ├── WrongModelKind                   FAILED_PRECONDITION
    ├── Overloaded                       RESOURCE_EXHAUSTED (retried first)
    ├── Unavailable (ConnectionError)    UNAVAILABLE (retried first)
    ├── DeadlineExceeded (TimeoutError)  DEADLINE_EXCEEDED
    ├── Cancelled                        CANCELLED (retried first)
    ├── Unauthenticated (PermissionError) UNAUTHENTICATED
    ├── ServerError                      anything else
    └── JobError                         a bulk job cannot go on (`ganserve.bulk`)
        ├── FolderLocked                 another job is writing to the output folder
        ├── ManifestError                a manifest that cannot be read or breaks its schema
        └── UnexpectedReply              the server answered other than the job asked
"""

from __future__ import annotations

import grpc


class GanserveError(Exception):
    """Base of every error the SDK raises; `code` is the gRPC status (None for local errors)."""

    code: grpc.StatusCode | None = None

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(GanserveError, ValueError):
    """A field is out of range; the message names it (INVALID_ARGUMENT)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(GanserveError, LookupError):
    """No such model or version (NOT_FOUND)."""

    code = grpc.StatusCode.NOT_FOUND


class WrongModelKind(GanserveError):
    """The model's kind does not offer this call, e.g. labels for an unconditional model."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(GanserveError):
    """The model's queue is full (RESOURCE_EXHAUSTED); retried with backoff before raising."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(GanserveError, ConnectionError):
    """No server answered, or it is draining (UNAVAILABLE); retried before raising."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GanserveError, TimeoutError):
    """The call's timeout passed (DEADLINE_EXCEEDED)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(GanserveError):
    """The call was cancelled (CANCELLED) by the server side, and the retries ran out."""

    code = grpc.StatusCode.CANCELLED


class Unauthenticated(GanserveError, PermissionError):
    """No accepted bearer token (UNAUTHENTICATED): give `token=` to the client."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ServerError(GanserveError):
    """Anything else the server reported (INTERNAL, UNKNOWN, ...)."""


class JobError(GanserveError):
    """A bulk job cannot go on for a reason of its own, not the server's status (no `code`)."""


class FolderLocked(JobError):
    """Another job (or this worker in another process) is writing to the output folder."""


class ManifestError(JobError):
    """A manifest that cannot be read or breaks its schema; the message names the file, the
    line and the field, on one line."""


class UnexpectedReply(JobError):
    """The server's reply is not what the job asked for (e.g. other labels than the job's
    layout gives): nothing of it is written."""


_BY_CODE: dict[grpc.StatusCode, type[GanserveError]] = {
    cls.code: cls  # type: ignore[misc]
    for cls in (
        InvalidArgument,
        NotFound,
        WrongModelKind,
        Overloaded,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unauthenticated,
    )
}
# Every ganserve rpc is idempotent, so these are retried. CANCELLED too: the SDK never cancels
# a call it would retry (a cancelled asyncio task raises CancelledError, not an RpcError), so
# one that ends CANCELLED was cancelled by the server side: gRPC core cancels calls it had not
# handed to the service yet when a server shuts down (seen in bench.soak's restarts).
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)


def from_rpc_error(exc: grpc.RpcError) -> GanserveError:
    """The SDK exception for a failed rpc (keeps the server's message)."""
    code = exc.code() if hasattr(exc, "code") else None  # type: ignore[attr-defined]
    details = exc.details() if hasattr(exc, "details") else str(exc)  # type: ignore[attr-defined]
    cls = _BY_CODE.get(code, ServerError)  # type: ignore[arg-type]
    return cls(f"{code.name if code else 'UNKNOWN'}: {details}", code)
