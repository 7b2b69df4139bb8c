"""An OTLP/gRPC trace receiver that keeps what it is sent: the far end of ganserve's tracing.

    python -m bench.otlp_receiver [--port 4317]       # prints `gRPC on 127.0.0.1:PORT,`

It serves OpenTelemetry's TraceService (`opentelemetry-proto`'s generated code) and counts the
spans it takes in, so the tracing tests can read back every span a server exported, over the
wire, and `bench.serving` can trace a server with somewhere real to send its spans.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc


class Received:
    """One received span, flattened: its resource's and its own attributes as dicts."""

    def __init__(self, resource: dict[str, Any], span: Any) -> None:
        self.resource, self.span = resource, span
        self.name = span.name
        self.trace_id, self.span_id = span.trace_id.hex(), span.span_id.hex()
        self.parent_id = span.parent_span_id.hex()
        self.attributes = _attributes(span.attributes)
        self.links = [link.span_id.hex() for link in span.links]
        self.events = [(e.name, _attributes(e.attributes)) for e in span.events]


def _attributes(values: Any) -> dict[str, Any]:
    out = {}
    for kv in values:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


class TraceReceiver(pb_grpc.TraceServiceServicer):
    """A TraceService on 127.0.0.1 (port 0: a free one) keeping every span in `spans`."""

    def __init__(self, port: int = 0, keep: bool = True) -> None:
        self.spans: list[Received] = []
        self.count = 0
        self.keep = keep
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(2))
        pb_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server.start()

    def Export(self, request: pb.ExportTraceServiceRequest, context: Any) -> Any:
        received, count = [], 0
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                count += len(scope.spans)
                if self.keep:
                    received += [Received(resource, s) for s in scope.spans]
        with self._lock:
            self.spans += received
            self.count += count
        return pb.ExportTraceServiceResponse()

    def wait_for(self, what: str, seconds: float, condition: Any) -> list[Received]:
        """The spans, once `condition(spans)` holds; AssertionError naming `what` after
        `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            with self._lock:
                spans = list(self.spans)
            if condition(spans):
                return spans
            assert time.monotonic() < deadline, f"{what}: not received in {seconds} s"
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.stop(0).wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4317)
    args = parser.parse_args()
    receiver = TraceReceiver(args.port, keep=False)
    print(f"gRPC on 127.0.0.1:{receiver.port}, OTLP traces", flush=True)  # as bench servers do
    try:
        while True:
            time.sleep(10)
            print(f"{receiver.count} spans", flush=True)
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()
