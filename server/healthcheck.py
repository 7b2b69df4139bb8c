"""`python -m server.healthcheck [ADDRESS]`: exit 0 when the server reports SERVING, else 1.

For container health checks. ADDRESS defaults to 127.0.0.1:$GANSERVE_PORT (8500).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 3.0) -> bool:
    """True when the health service at `address` says SERVING for `service`."""
    with grpc.insecure_channel(address) as channel:
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
    address = args[0] if args else f"127.0.0.1:{os.environ.get('GANSERVE_PORT', '8500')}"
    return 0 if check(address) else 1


if __name__ == "__main__":
    sys.exit(main())
