"""A real server on port 0 in a background thread, and helpers to call it (fixtures: conftest)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
import numpy as np

from ganserve.server.app import GanServer
from ganserve.server.config import ServerConfig
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc

T = TypeVar("T")
MODELS = Path(__file__).resolve().parents[1] / "models"
DCGAN, CGAN, PIX2PIX = "mnist-dcgan", "mnist-cgan", "mnist-edges2digits"
VAE = "mnist-vae"  # the VAE's decoder, served as an unconditional generator
SR4X = "mnist-sr4x"
INPAINT = "mnist-inpaint"  # fills the holes a mask marks
CYCLE = "mnist-digits2paper"  # cyclegan: digits → ink on paper, trained unpaired
BASE = ServerConfig(
    model_repository=MODELS, port=0, metrics_port=0, intra_op_threads=1, grace_seconds=5
)


class RunningServer:
    """GanServer on its own event loop thread; `stub` talks to it over a real channel."""

    def __init__(self, config: ServerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(self._make(config))
        self.call(self.server.start(), timeout=120)
        self.address = f"127.0.0.1:{self.server.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.GeneratorStub(self.channel)

    @staticmethod
    async def _make(config: ServerConfig) -> GanServer:
        return GanServer(config)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample, 0 if absent."""
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                head, value = line.rsplit(" ", 1)
                if all(f'{k}="{v}"' in head for k, v in labels.items()):
                    return float(value)
        return 0.0

    def stop(self, grace: float = 5) -> None:
        """Drain and stop the server and its loop (a second call does nothing)."""
        if self.loop.is_closed():
            return
        self.channel.close()
        self.call(self.server.stop(grace), timeout=grace + 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def until(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    """Wait, at most `seconds`, for `condition`; the failure says `what` never happened."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)


def stop_process(process: subprocess.Popen, seconds: float = 30) -> None:
    """SIGTERM, then up to `seconds` for it to end (a server drains), then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid`, in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid}: no VmRSS")


class ServerProcess:
    """`python -m ganserve.server` in a subprocess on the shipped models, port 0, metrics off;
    `flags` add to or override those (the last flag wins), `stderr` takes its log (default:
    ours). Ready once it printed its `gRPC on` line (`line`, `port`); as a context manager, it
    is always stopped at the end."""

    def __init__(
        self, *flags: str, env: dict[str, str] | None = None, stderr: IO[str] | None = None
    ) -> None:
        argv = [
            *(sys.executable, "-m", "ganserve.server", "--model-repository", str(MODELS)),
            *("--port", "0", "--metrics-port", "-1", "--log-level", "WARNING", *flags),
        ]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        self.line = ""
        deadline = time.monotonic() + 120
        while "gRPC on" not in self.line:
            self.line = self.process.stdout.readline() if self.process.stdout else ""
            if (not self.line and self.process.poll() is not None) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start: {' '.join(argv)}")
        self.port = int(re.search(r":(\d+),", self.line).group(1))  # type: ignore[union-attr]
        self.address = f"127.0.0.1:{self.port}"

    def stop(self, seconds: float = 30) -> None:
        """SIGTERM: the server drains (up to `seconds`), then exits."""
        stop_process(self.process, seconds)
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def images(batch: pb.ImageBatch) -> np.ndarray:
    dtype = {"uint8": np.uint8, "float32": np.float32}[batch.images.dtype]
    return np.frombuffer(batch.images.data, dtype).reshape(batch.images.shape)
