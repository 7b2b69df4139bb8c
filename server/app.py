"""Start, run and drain a ganserve server: `ganserve serve` or `python -m ganserve.server`.

Order of events: metrics endpoint up; gRPC port bound with health NOT_SERVING; every model
version loaded and warmed up (a failure stays with that version); health SERVING. SIGTERM or
SIGINT: health NOT_SERVING, new calls refused with UNAVAILABLE, in-flight calls get
`grace_seconds` to finish, then the process exits.

Health service names: "" (the server: SERVING once at least one model is ready),
"ganserve.v1.Generator" (the same), and "model/<name>" per model (SERVING while a version of it
is ready).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ganserve.export.repository import RepositoryError
from ganserve.oip import grpc_service_pb2, grpc_service_pb2_grpc
from ganserve.server import logs
from ganserve.server.config import ServerConfig, parse
from ganserve.server.core import Core
from ganserve.server.metrics import Metrics
from ganserve.server.models import ModelRepository
from ganserve.server.oip import InferenceService
from ganserve.server.quality import Judge, Monitor
from ganserve.server.rpc import register
from ganserve.server.runner import fix_mmap_threshold, trim_heap
from ganserve.server.security import TokenAuth, server_credentials
from ganserve.server.tracing import Tracing
from ganserve.server.v1 import GeneratorService
from ganserve.server.workers import supervise
from ganserve.v1 import ganserve_pb2, ganserve_pb2_grpc

log = logging.getLogger("ganserve.server")
V1 = ganserve_pb2.DESCRIPTOR.services_by_name["Generator"]
OIP = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]  # (server.oip)
SERVICE_NAME = V1.full_name
OIP_SERVICE_NAME = OIP.full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
IDLE_TRIM_SECONDS = 1.0  # how often an idle server gives freed heap back


class _ClientGoneFilter(logging.Filter):
    """grpc logs an ERROR when a stream's reply cannot be sent because its client cancelled;
    that is the client's doing, and the call is counted CANCELLED: keep it at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("ExecuteBatchError raised in core by servicer"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # the logger let it through at ERROR: show it only if DEBUG is wanted
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("grpc._cython.cygrpc").addFilter(_ClientGoneFilter())


class GanServer:
    """One server: gRPC (ganserve, health, reflection) plus the metrics endpoint."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.repo = ModelRepository(config, self.metrics)
        self.core = Core(self.repo, config, self.metrics)
        self.health = health.aio.HealthServicer()
        self.tracing = Tracing.from_env(os.environ)  # None: off (OTEL_TRACES_EXPORTER unset)
        self.port = 0
        self.metrics_port = 0
        limit = config.max_message_bytes
        self._credentials = server_credentials(config)
        interceptors = []
        if config.auth_token_file:
            interceptors.append(TokenAuth(config.auth_token_file, self.metrics))
        self._server = grpc.aio.server(
            interceptors=interceptors or None,
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                # a second server on a busy port fails to bind, unless it is meant to share it
                ("grpc.so_reuseport", 1 if config.reuse_port else 0),
                # Calls that arrived while the event loop was busy wait in gRPC core until the
                # service takes them. Past its soft limit (1,000) core cancels them at random,
                # uncounted: a burst of 3,000 lost a quarter that way. With the limit this high
                # a burst reaches the batcher, whose queue answers RESOURCE_EXHAUSTED, counted.
                ("grpc.server.max_pending_requests", config.max_pending_rpcs),
                ("grpc.server.max_pending_requests_hard_limit", config.max_pending_rpcs),
            ],
        )
        self._stopped = asyncio.Event()
        self._trimmer: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self.quality: Monitor | None = None  # the judge loads here: a bad one stops the start
        if config.quality_probe_seconds:
            judge = Judge(config.quality_judge)
            self.quality = Monitor(self.repo, self.metrics, judge, config.quality_probe_seconds)
        self._prober: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind, load every model, then report SERVING. Returns once ready to take calls."""
        if self.config.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(self.config.host, self.config.metrics_port)
        known, traced = self.repo.models.__contains__, self.tracing
        add_v1 = ganserve_pb2_grpc.add_GeneratorServicer_to_server
        v1 = GeneratorService(self.core)
        register(self._server, v1, V1, add_v1, self.metrics, known, traced)
        add_oip = grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server
        oip = InferenceService(self.core)
        register(self._server, oip, OIP, add_oip, self.metrics, known, traced)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = (SERVICE_NAME, OIP_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._server)
        address = f"{self.config.host}:{self.config.port}"
        if self._credentials is not None:
            self.port = self._server.add_secure_port(address, self._credentials)
        else:
            self.port = self._server.add_insecure_port(address)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, NOT_SERVING)
        await self._server.start()
        log.info(
            "gRPC on %s:%d (NOT_SERVING while models load), metrics on port %s, tracing %s",
            self.config.host,
            self.port,
            self.metrics_port or "off",
            "to " + "+".join(self.tracing.exporters) if self.tracing else "off",
        )
        names = None
        if self.config.model_control == "explicit" and self.config.load_models != "*":
            names = [n.strip() for n in self.config.load_models.split(",") if n.strip()]
        await self.repo.load(names)
        self.repo.on_change = self._publish_health
        await self._publish_health()
        self._trimmer = asyncio.create_task(self._trim_when_idle())
        if self.config.model_control == "poll":
            self._poller = asyncio.create_task(self._poll())
        if self.quality is not None:
            self._prober = asyncio.create_task(self.quality.run())
        log.info("serving %d model(s): %s", len(self.repo.models), ", ".join(self.repo.models))

    async def _publish_health(self) -> None:
        """Health follows the repository: model/<name> SERVING while a version is ready."""
        if self.core.draining:
            return
        for name in self.repo.models:
            ready = bool(self.repo.ready_versions(name))
            await self.health.set(f"model/{name}", SERVING if ready else NOT_SERVING)
        status = SERVING if self.repo.any_ready else NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _poll(self) -> None:
        """--model-control poll: rescan the repository every --poll-seconds."""
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            try:
                names = set(self.repo.names_on_disk()) | set(self.repo.models)
            except RepositoryError as exc:
                log.error("cannot rescan the repository: %s", exc)
                continue
            except Exception:  # the poller must outlive anything one rescan meets
                log.exception("cannot rescan the repository")
                continue
            for name in sorted(names):
                try:
                    await self.repo.sync(name)
                except Exception:  # one model's trouble never stops the polling
                    log.exception("model %s: the rescan failed", name)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls, let in-flight ones finish within `grace`."""
        if self._stopped.is_set():
            return
        self.core.drain()
        await self.health.enter_graceful_shutdown()
        grace = self.config.grace_seconds if grace is None else grace
        log.info("draining: in-flight calls have %.1f s", grace)
        await self._server.stop(grace)
        for task in (self._trimmer, self._poller, self._prober):
            if task is not None:
                task.cancel()
        await self.repo.close()
        self.core.close()
        self.metrics.stop()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports the spans still held
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def _trim_when_idle(self, every: float = IDLE_TRIM_SECONDS) -> None:
        """Once a second, if batches ran since the last look and none runs now, give the C
        heap's free memory back to the system (glibc keeps it: measured, 30-60 MB after a
        mix of calls; the trim takes ~1 ms, on a worker thread)."""
        seen = 0
        while True:
            await asyncio.sleep(every)
            runs, idle = self.repo.activity()
            if runs != seen and idle:
                seen = runs
                await asyncio.to_thread(trim_heap)


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    server = GanServer(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
    await server.start()
    print(
        f"ganserve: gRPC on {config.host}:{server.port}, metrics on port "
        f"{server.metrics_port or 'off'}",
        flush=True,
    )
    await server.wait()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse(argv)
    logs.configure(config.log_level, config.log_format)
    if config.workers > 1:
        return supervise(config)
    fix_mmap_threshold()
    asyncio.run(serve(config))
    return 0
