"""Tracing end to end: the SDK calls inside a span, the server exports its spans by OTLP/gRPC to a
receiver started here (`bench.otlp_receiver`, OpenTelemetry's own generated TraceService), and
the spans that arrive are checked: one trace, parent links, the batch linked to its calls.
Also: exemplars on the latency histogram, the batch span of coalesced calls, JSON logs, and the
settings ganserve refuses at start."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.otlp_receiver import Received, TraceReceiver
from ganserve import Client, tracecontext
from ganserve.errors import NotFound
from ganserve.server import tracing
from ganserve.server.batcher import Batcher
from ganserve.server.config import parse
from ganserve.server.logs import JsonFormatter
from ganserve.server.metrics import Metrics
from tests.servers import BASE, CGAN, DCGAN, RunningServer, ServerProcess

SERVER_KIND = 2  # opentelemetry.proto's SPAN_KIND_SERVER
caller_tracer = TracerProvider().get_tracer("a calling service")  # records, exports nowhere


@pytest.fixture
def receiver() -> Iterator[TraceReceiver]:
    running = TraceReceiver()
    yield running
    running.stop()


@pytest.fixture
def traced(receiver: TraceReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    """A server (two models) exporting its spans to `receiver`, as OTEL_* variables ask."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # ms: export soon after a call
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ganserve-under-test")
    config = replace(BASE, model_control="explicit", load_models=f"{DCGAN},{CGAN}")
    server = RunningServer(config)
    assert server.server.tracing is not None
    yield server
    server.stop()


def _hex(span: object) -> tuple[str, str]:
    c = span.get_span_context()  # type: ignore[attr-defined]
    return format(c.trace_id, "032x"), format(c.span_id, "016x")


def _of(spans: list[Received], trace_id: str) -> dict[str, list[Received]]:
    named: dict[str, list[Received]] = {}
    for s in spans:
        if s.trace_id == trace_id:
            named.setdefault(s.name, []).append(s)
    return named


def test_a_call_from_inside_a_span_is_one_trace_through_the_server(
    traced: RunningServer, receiver: TraceReceiver
) -> None:
    with caller_tracer.start_as_current_span("train step") as caller, Client(traced.address) as c:
        batch = c.sample(DCGAN, 3, seed=7)
    assert len(batch) == 3
    trace_id, caller_id = _hex(caller)
    wanted = {"ganserve.v1.Generator/Sample", "batch", "encode"}
    spans = receiver.wait_for("the call's spans", 20, lambda got: wanted <= set(_of(got, trace_id)))
    named = _of(spans, trace_id)
    (rpc,) = named["ganserve.v1.Generator/Sample"]
    assert rpc.parent_id == caller_id  # the caller's span, from the call's traceparent
    assert rpc.span.kind == SERVER_KIND
    assert rpc.attributes["rpc.system"] == "grpc"
    assert rpc.attributes["rpc.service"] == "ganserve.v1.Generator"
    assert rpc.attributes["rpc.method"] == "Sample"
    assert rpc.attributes["ganserve.model"] == DCGAN
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    assert rpc.resource["service.name"] == "ganserve-under-test"
    (run,) = named["batch"]
    assert run.parent_id == rpc.span_id and run.links == [rpc.span_id]
    assert run.attributes["ganserve.batch.size"] == 3
    assert run.attributes["ganserve.model"].startswith(DCGAN)
    assert run.attributes["ganserve.instance"].startswith("run-")
    (encode,) = named["encode"]
    assert encode.parent_id == rpc.span_id
    assert encode.attributes["ganserve.encoding"] == "RAW_UINT8"
    for span in (run, encode, *named.get("queue", [])):  # children lie within the rpc
        assert rpc.span.start_time_unix_nano <= span.span.start_time_unix_nano
        assert span.span.end_time_unix_nano <= rpc.span.end_time_unix_nano


def test_a_stream_is_one_span_with_an_event_per_chunk(
    traced: RunningServer, receiver: TraceReceiver
) -> None:
    with caller_tracer.start_as_current_span("bulk job") as caller, Client(traced.address) as c:
        chunks = list(c.sample_stream(DCGAN, 10, chunk_size=4))
    assert [len(b) for b in chunks] == [4, 4, 2]
    trace_id, _ = _hex(caller)
    name = "ganserve.v1.Generator/SampleStream"
    spans = receiver.wait_for("the stream's span", 20, lambda got: name in _of(got, trace_id))
    named = _of(spans, trace_id)
    assert set(named) == {name}  # no span per chunk or per image
    (stream,) = named[name]
    events = [(n, a["ganserve.start_index"], a["ganserve.images"]) for n, a in stream.events]
    assert events == [("chunk", 0, 4), ("chunk", 4, 4), ("chunk", 8, 2)]


def test_a_failed_call_carries_its_status_and_the_latency_an_exemplar(
    traced: RunningServer, receiver: TraceReceiver
) -> None:
    with caller_tracer.start_as_current_span("caller") as caller, Client(traced.address) as c:
        with pytest.raises(NotFound):
            c.describe_model("no-such-model")
        c.generate(CGAN, labels=[1, 2])
    trace_id, _ = _hex(caller)
    spans = receiver.wait_for(
        "both calls' spans",
        20,
        lambda got: (
            {"ganserve.v1.Generator/DescribeModel", "ganserve.v1.Generator/Generate"}
            <= set(_of(got, trace_id))
        ),
    )
    (describe,) = _of(spans, trace_id)["ganserve.v1.Generator/DescribeModel"]
    assert describe.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert describe.span.status.code == 0  # the caller's mistake: no error on the server span
    # OpenMetrics (what Prometheus asks for with exemplar storage on) shows the trace id
    url = f"http://127.0.0.1:{traced.server.metrics_port}/metrics"
    request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("ganserve_request_latency_seconds")]
    generate = [ln for ln in lines if 'method="Generate"' in ln and f'trace_id="{trace_id}"' in ln]
    assert generate, "no exemplar of the traced call on its latency histogram"
    assert f'trace_id="{trace_id}"' not in traced.metrics()  # plain text format: no exemplars


def test_calls_coalesced_into_one_batch_are_each_linked_to_it() -> None:
    exported = InMemorySpanExporter()
    traces = tracing.Tracing((), "grpc")
    traces.provider.add_span_processor(SimpleSpanProcessor(exported))
    gate, entered = threading.Event(), threading.Event()

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        entered.set()
        assert gate.wait(10)
        return feeds["z"] * 2

    async def call(b: Batcher, value: float) -> np.ndarray:
        c = traces.start_call("/test.Svc/Run", None, "m", stream=False)
        try:
            return await b.submit({"z": np.full((1, 1), value, np.float32)})
        finally:
            c.end(0, "OK")

    async def go() -> None:
        b = Batcher("m:1", [run], max_batch_size=8, max_queue_delay_s=0.0, max_queue_size=64,
                    metrics=Metrics())  # fmt: skip
        b.start()
        try:
            first = asyncio.ensure_future(call(b, 0))  # holds the one instance
            while not entered.is_set():
                await asyncio.sleep(0.001)
            others = [asyncio.ensure_future(call(b, v)) for v in (1, 2, 3)]
            await asyncio.sleep(0.05)  # queued behind the held run
            gate.set()
            await asyncio.gather(first, *others)
        finally:
            await b.close()

    asyncio.run(asyncio.wait_for(go(), 30))
    spans = exported.get_finished_spans()
    calls = {s.context.span_id: s for s in spans if s.name == "test.Svc/Run"}
    batches = sorted((s for s in spans if s.name == "batch"), key=lambda s: s.start_time)
    assert [s.attributes["ganserve.batch.size"] for s in batches] == [1, 3]
    second = batches[1]
    linked = {link.context.span_id for link in second.links}
    assert len(linked) == 3 and linked <= set(calls)
    assert second.parent.span_id in linked  # under the first call it served
    queues = [s for s in spans if s.name == "queue"]  # every call waited in the queue
    assert len(queues) == 4 and {q.parent.span_id for q in queues} == set(calls)


def test_the_sdk_sends_trace_context_only_from_inside_a_span() -> None:
    base = (("authorization", "Bearer t"),)
    assert tracecontext.metadata(base) == base and tracecontext.capture() == {}
    assert tracecontext.metadata(None, {"traceparent": "00-ab-cd-01"}) == (
        ("traceparent", "00-ab-cd-01"),
    )  # a worker continuing the trace its dataset was built in
    with caller_tracer.start_as_current_span("caller") as span:
        trace_id, span_id = _hex(span)
        sent = dict(tracecontext.metadata(base, {"traceparent": "00-ab-cd-01"}) or ())
    assert sent["authorization"] == "Bearer t"
    assert sent["traceparent"].startswith(f"00-{trace_id}-{span_id}-")  # the current span wins


def test_json_logs_carry_the_traced_call_ids() -> None:
    traces = tracing.Tracing((), "grpc")
    record = logging.LogRecord("ganserve.x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    plain = json.loads(JsonFormatter().format(record))
    assert plain["message"] == "a b" and plain["level"] == "WARNING" and "trace_id" not in plain
    call = traces.start_call("/test.Svc/Run", None, "", stream=False)
    try:
        inside = json.loads(JsonFormatter().format(record))
    finally:
        call.end(0, "OK")
    assert (inside["trace_id"], inside["span_id"]) == call.ids()
    assert len(inside["trace_id"]) == 32 and inside["time"].endswith("Z")


def test_a_server_with_json_logs_writes_nothing_but_json_lines(tmp_path) -> None:
    log = tmp_path / "server.log"
    flags = ("--log-format", "json", "--log-level", "INFO", "--model-control", "explicit")
    with (
        log.open("w") as stderr,
        ServerProcess(*flags, "--load-models", DCGAN, stderr=stderr) as server,
        Client(server.address) as client,
    ):
        client.sample(DCGAN, 1)
    lines = log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any("serving 1 model" in e["message"] for e in entries)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
)
def test_tracing_settings_ganserve_cannot_honour_stop_it_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str,
    value: str, named: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        parse([])
    assert stopped.value.code == 2 and named in capsys.readouterr().err


def test_tracing_is_off_unless_asked_for() -> None:
    assert tracing.Tracing.from_env({}) is None
    assert tracing.Tracing.from_env({"OTEL_TRACES_EXPORTER": "none"}) is None
    on = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert tracing.Tracing.from_env(on) is None
    assert tracing.settings({"OTEL_TRACES_EXPORTER": "otlp,console"}) == (
        ("otlp", "console"),
        "grpc",
    )
