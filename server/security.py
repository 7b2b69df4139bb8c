"""TLS credentials and bearer-token authentication for the gRPC port.

`--tls-cert`/`--tls-key` serve TLS; `--tls-client-ca` also demands a client certificate
signed by that CA (mutual TLS). `--auth-token-file` names a file of accepted tokens, one per
line (`read_tokens` states the format): every call must carry `authorization: Bearer <token>`
metadata, compared in constant time, or it ends UNAUTHENTICATED before any work.
The file is read again when it changes (looked at once a second), so tokens rotate without a
restart: write the new token beside the old, move clients over, then drop the old one.
Health and reflection stay open, so load balancers' probes and `grpcurl list` work.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from ganserve.server.config import ServerConfig
from ganserve.server.errors import Unauthenticated, status_of
from ganserve.server.metrics import Metrics

_TOKEN = re.compile(r"[\x21-\x7e]+")
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
log = logging.getLogger("ganserve.security")


class SecurityError(ValueError):
    """A TLS or token file that cannot be used; the message names the flag."""


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"{flag}: cannot read {path} ({exc.strerror})") from None


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the config's files, or None for a plaintext port."""
    if not config.tls_cert:
        return None
    pair = (_read(config.tls_key, "--tls-key"), _read(config.tls_cert, "--tls-cert"))
    ca = _read(config.tls_client_ca, "--tls-client-ca") if config.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=bool(ca))


def read_tokens(path: str) -> list[bytes]:
    """The accepted tokens of a token file (format: docs/serving.md). UTF-8 text, one token per
    line; leading and trailing whitespace is stripped; blank lines and lines whose first
    non-blank character is `#` are ignored. A token is visible ASCII (0x21-0x7E, what gRPC
    metadata can carry) without spaces. SecurityError, naming the line, for anything else."""
    try:
        text = _read(path, "--auth-token-file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecurityError(f"--auth-token-file: {path} is not UTF-8 text ({exc.reason})") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if not _TOKEN.fullmatch(token):
            raise SecurityError(
                f"--auth-token-file: {path} line {number}: a token is visible ASCII without "
                "spaces (a comment line starts with #)"
            )
        tokens.append(token.encode())
    if not tokens:
        raise SecurityError(f"--auth-token-file: {path} holds no token")
    return tokens


class TokenAuth(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for a call without an accepted bearer token (health and reflection
    excepted), counted in ganserve_requests_total under model "unknown"."""

    def __init__(self, path: str, metrics: Metrics, recheck_seconds: float = 1.0) -> None:
        self._path = path
        self._metrics = metrics
        self._recheck = recheck_seconds
        self._stamp = self._file_stamp()
        self._tokens = read_tokens(path)  # at start, an unusable file is an error
        self._next_check = time.monotonic() + recheck_seconds

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self._path)
        except OSError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload_if_changed(self) -> None:
        """Read the token file again if it changed; keep the old tokens if it is unusable."""
        self._next_check = time.monotonic() + self._recheck
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._tokens = read_tokens(self._path)
        except SecurityError as exc:
            log.warning("keeping the previous tokens: %s", exc)
            return
        log.info("--auth-token-file changed: %d tokens accepted", len(self._tokens))

    def _accepted(self, metadata: Any) -> bool:
        if time.monotonic() >= self._next_check:
            self._reload_if_changed()
        given = next((v for k, v in metadata or () if k == "authorization"), "")
        given = given.encode() if isinstance(given, str) else given
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        matches = [hmac.compare_digest(token, t) for t in self._tokens]  # no early exit
        return any(matches)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES):
            return handler
        if self._accepted(details.invocation_metadata):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        self._metrics.requests_of("unknown", method, status_of(Unauthenticated()).name).inc()
        return _denied(handler)


async def _deny(request: Any, context: grpc.aio.ServicerContext) -> None:
    error = Unauthenticated(
        "authorization: a bearer token is required (metadata 'authorization: Bearer <token>')"
    )
    await context.abort(status_of(error), str(error))


def _denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that refuses the call."""
    shape = (handler.request_streaming, handler.response_streaming)
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[shape]
    return make(
        _deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
