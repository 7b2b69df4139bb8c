"""Prometheus metrics, prefixed ganserve_, in a registry of their own (one per server)."""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterable
from enum import StrEnum
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class State(StrEnum):
    """Where a model version is: loading → ready | failed; ready → unloaded (removed or
    unloaded). The values are `ganserve_model_state`'s `state` labels and, upper-cased, the
    wire's VersionState (`server.models` keeps each version's)."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADED = "unloaded"


class Metrics:
    """Every series the server exports; see docs/serving.md for what each one means."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ganserve_requests",
            "Finished rpcs by model, method and status code.",
            ["model", "method", "code"],
            registry=r,
        )
        self.request_latency = Histogram(
            "ganserve_request_latency_seconds",
            "Time from an rpc's arrival to its last byte.",
            ["model", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "ganserve_queue_wait_seconds",
            "Time a piece of work waited in its model's queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_latency = Histogram(
            "ganserve_compute_latency_seconds",
            "ONNX Runtime time per batch.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "ganserve_batch_size",
            "Images per ONNX Runtime run.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "ganserve_queue_depth",
            "Images waiting in a model's queue.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",  # --workers: the sum over the live workers
        )
        self.busy_instances = Gauge(
            "ganserve_busy_instances",
            "Execution instances of a model holding a batch (filling or running).",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.images = Counter(
            "ganserve_images",
            "Images produced, by model and method.",
            ["model", "method"],
            registry=r,
        )
        self.model_state = Gauge(
            "ganserve_model_state",
            "1 for the state each model version is in (loading, ready, failed).",
            ["model", "version", "state"],
            registry=r,
            multiprocess_mode="livemax",  # a state any live worker is in
        )
        self.model_load_failures = Counter(
            "ganserve_model_load_failures",
            "Model version loads that failed (reason: error, or signature when a version's "
            "kind, inputs or image shape differ from the serving versions').",
            ["model", "reason"],
            registry=r,
        )
        # the quality monitor (server.quality): one worker probes, so the highest live value
        self.model_quality = Gauge(
            "ganserve_model_quality",
            "The independent judge's figure of a version's last quality probe (metric: "
            "frechet_ratio, min_class_share, max_class_share, class_accuracy).",
            ["model", "version", "metric"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_quality_card = Gauge(
            "ganserve_model_quality_card",
            "The same figure on the version's model card, as it was exported.",
            ["model", "version", "metric"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_quality_within_card = Gauge(
            "ganserve_model_quality_within_card",
            "1 when every figure of the version's last probe is within its margin of the "
            "card's (server.quality.MARGINS), 0 when one is not.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_quality_checked = Gauge(
            "ganserve_model_quality_probe_timestamp_seconds",
            "When the version's last quality probe finished (Unix time); until its first, when "
            "the monitor first saw the version. Old: callers keep it too busy to probe.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_quality_probes = Counter(
            "ganserve_model_quality_probes",
            "Quality probes finished, by model and version (they wait for idle moments: a "
            "count that stops rising under load means callers kept the model busy).",
            ["model", "version"],
            registry=r,
        )
        self._quality_seen: set[tuple[str, int]] = set()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # Per-request series, looked up once per label set: `labels()` costs several microseconds,
    # and the label sets are bounded (model names the server knows, methods, status codes).
    def requests_of(self, model: str, method: str, code: str) -> Counter:
        return self._child(self.requests, (model, method, code))

    def request_latency_of(self, model: str, method: str) -> Histogram:
        return self._child(self.request_latency, (model, method))

    def images_of(self, model: str, method: str) -> Counter:
        return self._child(self.images, (model, method))

    def _child(self, metric: Counter | Histogram, labels: tuple[str, ...]) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def set_model_state(self, model: str, version: int, state: State) -> None:
        for s in State:
            self.model_state.labels(model, str(version), s).set(1 if s == state else 0)

    def set_quality(
        self,
        model: str,
        version: int,
        figures: dict[str, float],
        card: dict[str, float],
        ok: bool,
    ) -> None:
        """Publish a quality probe's figures, the card's, and whether they agree."""
        v = str(version)
        for metric, value in figures.items():
            self.model_quality.labels(model, v, metric).set(value)
        for metric, value in card.items():
            self.model_quality_card.labels(model, v, metric).set(value)
        self.model_quality_within_card.labels(model, v).set(1 if ok else 0)
        self.model_quality_probes.labels(model, v).inc()
        self.model_quality_checked.labels(model, v).set_to_current_time()

    def saw_quality_version(self, model: str, version: int) -> None:
        """The monitor will probe this version: its probe time starts now, if it has none."""
        key = (model, version)
        if key not in self._quality_seen:
            self._quality_seen.add(key)
            self.model_quality_checked.labels(model, str(version)).set_to_current_time()
            self.model_quality_probes.labels(model, str(version))  # 0 until the first

    def forget_quality(self, model: str, version: int, metrics: Iterable[str]) -> None:
        """Drop an unloaded version's quality series (figures `metrics`), so no alert fires
        on a version that is gone. Under --workers (prometheus_client's multiprocess mode)
        a series cannot be removed, so its gauges are set to NaN, which no rule fires on."""
        v = str(version)
        self._quality_seen.discard((model, version))
        gauges = [(g, (model, v, m)) for g in (self.model_quality, self.model_quality_card)
                  for m in metrics]  # fmt: skip
        gauges += [(self.model_quality_within_card, (model, v))]
        gauges += [(self.model_quality_checked, (model, v))]
        multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        for gauge, labels in gauges:
            if multiprocess:
                if labels in gauge._metrics:  # only the series this process wrote
                    gauge.labels(*labels).set(math.nan)
            else:
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        if not multiprocess:
            with contextlib.suppress(KeyError):
                self.model_quality_probes.remove(model, v)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP endpoint; returns the bound port (useful with port 0)."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
