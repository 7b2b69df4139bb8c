"""`python -m ganserve.server.healthcheck [ADDRESS]`: exit 0 when the server reports SERVING,
else 1.

For container health checks. It resolves the server's own configuration from the environment
(`server.config.resolve`, the GANSERVE_* variables `ganserve serve` reads), so the image's
HEALTHCHECK works however the server was set up; ADDRESS defaults to 127.0.0.1 and the
configured port (GANSERVE_PORT, default 8500):

- with GANSERVE_TLS_CERT set it speaks TLS, trusting GANSERVE_HEALTHCHECK_CA (default: the
  server's certificate file itself, right for a self-signed one) and checking the name in
  GANSERVE_HEALTHCHECK_SERVER_NAME (default `localhost`);
- with GANSERVE_TLS_CLIENT_CA set too (mutual TLS) it presents GANSERVE_HEALTHCHECK_CERT and
  GANSERVE_HEALTHCHECK_KEY (default: the server's own certificate and key, right when the
  client CA signed them).

The health service needs no token, so GANSERVE_AUTH_TOKEN_FILE changes nothing here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ganserve.server.config import ServerConfig, ServerConfigError, from_environment


def channel_for(address: str, config: ServerConfig, environ: Mapping[str, str]) -> grpc.Channel:
    """A channel to `address`: plaintext, or TLS (and a client certificate) as the server's
    `config` says it serves; the GANSERVE_HEALTHCHECK_* variables of `environ` choose what
    the check itself trusts and presents."""
    cert = config.tls_cert
    if not cert:
        return grpc.insecure_channel(address)
    root = Path(environ.get("GANSERVE_HEALTHCHECK_CA") or cert).read_bytes()
    key_pair: tuple[bytes | None, bytes | None] = (None, None)
    if config.tls_client_ca:
        own_cert = environ.get("GANSERVE_HEALTHCHECK_CERT") or cert
        own_key = environ.get("GANSERVE_HEALTHCHECK_KEY") or config.tls_key
        key_pair = (Path(own_key).read_bytes(), Path(own_cert).read_bytes())
    credentials = grpc.ssl_channel_credentials(root, *key_pair)
    name = environ.get("GANSERVE_HEALTHCHECK_SERVER_NAME") or "localhost"
    return grpc.secure_channel(address, credentials, [("grpc.ssl_target_name_override", name)])


def check(
    address: str,
    service: str = "",
    timeout: float = 3.0,
    environ: Mapping[str, str] | None = None,
    config: ServerConfig | None = None,
) -> bool:
    """True when the health service at `address` says SERVING for `service`; `config` is the
    server's (default: resolved from `environ`)."""
    environ = os.environ if environ is None else environ
    try:
        config = from_environment(environ) if config is None else config
        channel = channel_for(address, config, environ)
    except ServerConfigError as exc:
        print(f"unhealthy: the server's configuration is invalid: {exc}", file=sys.stderr)
        return False
    except OSError as exc:
        print(f"unhealthy: cannot read a TLS file: {exc}", file=sys.stderr)
        return False
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name} {exc.details()}", file=sys.stderr)
            return False
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = from_environment(os.environ)
    except ServerConfigError as exc:
        print(f"unhealthy: the server's configuration is invalid: {exc}", file=sys.stderr)
        return 1
    address = args[0] if args else f"127.0.0.1:{config.port}"
    return 0 if check(address, config=config) else 1


if __name__ == "__main__":
    sys.exit(main())
