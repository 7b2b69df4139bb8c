"""`--workers N`: N server processes on one gRPC port, and one metrics endpoint for all of them.

One Python process runs one event loop, so on a host with many cores a single server's gRPC and
request work tops out at about one core. This supervisor reserves the port with SO_REUSEPORT
(as grpc's own multiprocessing example does), then starts N ordinary servers (`python -m
server --workers 1 --reuse-port true`) on it, each loading its own models; the kernel spreads
incoming connections over them. Metrics use prometheus_client's multiprocess mode: the workers
write their series to files in a private folder and the supervisor serves their sum on the
metrics port, so a dashboard still sees one server (gauges: queue depth and busy instances are
summed, the model state is the maximum over the live workers).

It reports ready (the `gRPC on HOST:PORT,` line) once every worker has. SIGTERM or SIGINT is
passed on to every worker, which drains as a lone server does. A worker that exits on its own
stops the others and the supervisor exits non-zero: the orchestrator restarts the whole server,
which keeps one rule for what "ready" means.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

from ganserve.server.config import ServerConfig

log = logging.getLogger("ganserve.workers")
READY = "gRPC on "


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Bind (not listen) a SO_REUSEPORT socket on host:port, so port 0 becomes a fixed free port
    that the workers can share and nobody else takes while they start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def worker_command(config: ServerConfig) -> list[str]:
    """`python -m ganserve.server` with every setting of `config` spelled out as a flag."""
    argv = [sys.executable, "-m", "ganserve.server"]
    for f in fields(ServerConfig):
        value = getattr(config, f.name)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        argv += [f"--{f.name.replace('_', '-')}", text]
    return argv


class _Worker:
    """One worker process; its stdout is read for the ready line, then passed through."""

    def __init__(self, index: int, config: ServerConfig, env: dict[str, str]) -> None:
        self.index = index
        self.process = subprocess.Popen(
            worker_command(config), stdout=subprocess.PIPE, text=True, env=env
        )

    def follow(self, events: queue.Queue[tuple[str, _Worker | None]]) -> None:
        """Report ("ready", self) at its ready line and ("exit", self) when it has exited."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if READY in line:
                events.put(("ready", self))
            else:
                sys.stdout.write(line)
        self.process.wait()
        events.put(("exit", self))


def supervise(config: ServerConfig) -> int:
    """Run `config.workers` servers on one port until a signal (or a worker's exit)."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    state = Path(tempfile.mkdtemp(prefix="ganserve-metrics-"))
    events: queue.Queue[tuple[str, _Worker | None]] = queue.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: events.put(("signal", None)))
    http = None
    workers: list[_Worker] = []
    code = 0
    try:
        with reserve_port(config.host, config.port) as port:
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(state)}
            child = replace(config, port=port, metrics_port=-1, workers=1, reuse_port=True)
            # one worker probes model quality (server.quality); the others serve
            quiet = replace(child, quality_probe_seconds=0)
            workers = [_Worker(i, quiet if i else child, env) for i in range(config.workers)]
            for w in workers:
                threading.Thread(target=w.follow, args=(events,), daemon=True).start()
            metrics_port = "off"
            if config.metrics_port >= 0:
                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry, path=str(state))
                http, _ = start_http_server(config.metrics_port, config.host, registry)
                metrics_port = str(http.server_port)
            ready = 0
            while True:
                kind, worker = events.get()
                if kind == "signal":
                    break
                assert worker is not None
                if kind == "exit":
                    multiprocess.mark_process_dead(worker.process.pid, str(state))
                    log.error(
                        "worker %d exited with %s; stopping the others",
                        worker.index,
                        worker.process.returncode,
                    )
                    code = 1
                    break
                ready += 1
                if ready == len(workers):
                    print(
                        f"ganserve: {READY}{config.host}:{port}, metrics on port "
                        f"{metrics_port} ({len(workers)} workers)",
                        flush=True,
                    )
            return _stop(workers, config.grace_seconds) or code
    finally:
        for w in workers:  # never leave a worker behind, whatever went wrong above
            if w.process.poll() is None:
                w.process.kill()
                w.process.wait()
        if http is not None:
            http.shutdown()
            http.server_close()
        shutil.rmtree(state, ignore_errors=True)


def _stop(workers: list[_Worker], grace: float) -> int:
    """SIGTERM every worker still running, wait for their drain, then kill what is left."""
    for w in workers:
        if w.process.poll() is None:
            w.process.send_signal(signal.SIGTERM)
    code = 0
    for w in workers:
        try:
            w.process.wait(grace + 30)
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait()
        code = code or (1 if w.process.returncode else 0)
    return code
