"""A real Prometheus (Debian's `prometheus`) scraping a running ganserve under load: what it
computes agrees with what the load generator saw, the alerting rules load into it, every
expression of the Grafana dashboard evaluates without error, and (the server traced, its spans
sent to an OTLP receiver here) the latency histogram's exemplars name traces that exist."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.otlp_receiver import TraceReceiver
from ganserve.v1 import ganserve_pb2 as pb
from tests.servers import DCGAN, RunningServer, stop_process
from tests.test_prometheus_rules import promtool

ROOT = Path(__file__).resolve().parents[1]
# Prometheus scrapes (and evaluates the rules) every SCRAPE_MS; the load runs LOAD_SECONDS
# (20 scrapes), then four scrapes' time passes, so that the last calls are in its counters.
SCRAPE_MS = 500
LOAD_SECONDS = 10
SETTLE_MS = 4 * SCRAPE_MS


def free_port() -> int:
    with socket.socket() as s:  # Prometheus cannot report a port 0 it bound
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, folder: Path, target: str) -> None:
        promtool()  # installs Debian's prometheus when missing (or skips)
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("the prometheus server is not installed")
        every = f"{SCRAPE_MS}ms"
        config = {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": [str(ROOT / "deploy" / "prometheus" / "ganserve-rules.yaml")],
            "scrape_configs": [{"job_name": "ganserve", "static_configs": [{"targets": [target]}]}],
        }
        (folder / "prometheus.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--enable-feature=exemplar-storage",  # the dashboard's links to traces
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait(lambda: self.get("/-/ready") is not None, "never became ready")

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as reply:
                body = reply.read().decode()
        except OSError:
            return None
        return json.loads(body) if body.startswith("{") else body

    def query(self, expr: str) -> dict[str, Any]:
        reply = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert reply is not None and reply["status"] == "success", (expr, reply)
        return reply["data"]

    def value(self, expr: str) -> float:
        result = self.query(expr)["result"]
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait(self, condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.process, 20)


@pytest.fixture(scope="module")
def receiver() -> Iterator[TraceReceiver]:
    running = TraceReceiver()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory, receiver: TraceReceiver
) -> Iterator[tuple[Prometheus, dict[str, float]]]:
    """A server under LOAD_SECONDS of load, scraped every SCRAPE_MS, and what the load saw
    (one Prometheus and one server for the module's tests). The server traces every call."""
    from dataclasses import replace

    from tests.servers import BASE

    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_TRACES_EXPORTER", "otlp")
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")
        # and probes each generator's quality (the dashboard's quality panels)
        judge = ROOT / "judges" / "judge.onnx"
        quality = {"quality_probe_seconds": 1.0, "quality_judge": judge}
        server = RunningServer(replace(BASE, metrics_port=0, **quality))
    prometheus = Prometheus(
        tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{server.server.metrics_port}"
    )
    try:
        prometheus.wait(lambda: prometheus.query('up{job="ganserve"} == 1')["result"] != [],
                        "never scraped ganserve")  # fmt: skip
        latencies: list[float] = []
        lock = threading.Lock()
        end = time.monotonic() + LOAD_SECONDS

        def client(i: int) -> None:
            request = pb.SampleRequest(model=DCGAN, count=1 + i % 4, seed=i)
            while time.monotonic() < end:
                t = time.perf_counter()
                server.stub.Sample(request, timeout=30)
                with lock:
                    latencies.append(time.perf_counter() - t)

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.monotonic() - started
        time.sleep(SETTLE_MS / 1000)
        latencies.sort()
        seen = {
            "calls": float(len(latencies)),
            "rate": len(latencies) / seconds,
            "p99": latencies[int(0.99 * (len(latencies) - 1))],
            "p50": latencies[len(latencies) // 2],
        }
        yield prometheus, seen
    finally:
        prometheus.stop()
        server.stop()


def test_prometheus_sees_what_the_load_generator_saw(
    scraped: tuple[Prometheus, dict[str, float]],
) -> None:
    prometheus, seen = scraped
    calls = 'sum(ganserve_requests_total{job="ganserve",method="Sample",code="OK"})'
    assert prometheus.value(calls) == seen["calls"]  # a counter: exact
    # the rate over the load, from the counter's samples in Prometheus
    rate = prometheus.value(
        f'sum(rate(ganserve_requests_total{{method="Sample",code="OK"}}[{LOAD_SECONDS}s] '
        f"offset {SETTLE_MS}ms))"
    )
    assert 0.75 * seen["rate"] < rate < 1.25 * seen["rate"], (rate, seen)
    p99 = prometheus.value(
        "histogram_quantile(0.99, sum by (le) "
        '(rate(ganserve_request_latency_seconds_bucket{method="Sample"}[1m])))'
    )
    # The server's p99 (arrival to last byte, interpolated in its histogram's buckets) is
    # below the client's (which adds the network and the client) and of its order.
    assert 0.1 * seen["p99"] < p99 < 2.0 * seen["p99"], (p99, seen)


def test_every_dashboard_expression_evaluates(
    scraped: tuple[Prometheus, dict[str, float]],
) -> None:
    prometheus, _ = scraped
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "ganserve.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    empty = []
    for expr in exprs:
        concrete = expr.replace("$__rate_interval", "1m").replace("$model", ".*")
        if not prometheus.query(concrete)["result"]:  # query() fails on any error
            empty.append(expr)
    # errors by code may be empty under clean load; everything else has data
    assert all("code!=" in e for e in empty), empty
    rules = prometheus.get("/api/v1/rules")["data"]["groups"]
    loaded = [r for g in rules for r in g["rules"]]
    assert len(loaded) == 11 and all(r["health"] == "ok" for r in loaded), loaded


def test_latency_exemplars_link_to_the_traces_the_server_exported(
    scraped: tuple[Prometheus, dict[str, float]], receiver: TraceReceiver
) -> None:
    prometheus, _ = scraped
    now = time.time()
    query = {
        "query": 'ganserve_request_latency_seconds_bucket{method="Sample"}',
        "start": str(now - 120),
        "end": str(now),
    }
    reply = prometheus.get("/api/v1/query_exemplars?" + urllib.parse.urlencode(query))
    assert reply is not None and reply["status"] == "success", reply
    ids = {e["labels"]["trace_id"] for series in reply["data"] for e in series["exemplars"]}
    assert ids, "Prometheus stored no exemplar of ganserve's latency"
    spans = receiver.wait_for(
        "the exemplars' traces", 20, lambda got: ids <= {s.trace_id for s in got}
    )
    rpcs = {s.trace_id for s in spans if s.name == "ganserve.v1.Generator/Sample"}
    assert ids <= rpcs  # each exemplar names a Sample call's trace
