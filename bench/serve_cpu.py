"""Server vs raw ONNX Runtime, side by side in one run, same model and thread settings.

    .venv/bin/python -m bench.serve_cpu [--model mnist-dcgan] [--seconds 5] [--threads 2]
    python -m bench.serve_cpu --device cuda [--repository DIR --model NAME]   # the GPU matrix

Prints a table: raw ONNX Runtime at batch 1, 64 and 256 in this process; then the server (a
subprocess on port 0) with 256-image unary calls, a 256-chunk stream, and 64 concurrent
single-image calls, with dynamic batching on (max batch 64) and off (max batch 1), and the
same single-image load against a gRPC server that computes nothing (the stack's ceiling on this
machine, the client included). Ratios are server over raw at the same batch size. Absolute
figures depend on the machine; the ratios are what the issue's targets are about.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import onnxruntime as ort

from export.metadata import example_inputs
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc
from server.runner import Runner

ROOT = Path(__file__).resolve().parents[1]


def raw_rate(path: Path, batch: int, seconds: float, threads: int, device: str) -> float:
    """Images/s of ONNX Runtime alone, through the server's own Runner (same session options,
    IO binding on CUDA, output copied to the host)."""
    runner = Runner(path, device=device, threads=threads)
    feeds = example_inputs(runner.card, batch)
    runner.run(feeds)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner.run(feeds)
        n += batch
    return n / (time.perf_counter() - start)


class Server:
    """`python -m server` in a subprocess on a free port."""

    def __init__(
        self,
        threads: int,
        max_batch: int,
        delay_ms: float,
        echo: bool = False,
        device: str = "cpu",
        repository: Path = ROOT / "models",
    ) -> None:
        flags = {
            "--model-repository": repository,
            "--device": device,
            "--port": 0,
            "--metrics-port": -1,
            "--intra-op-threads": threads,
            "--max-batch-size": max_batch,
            "--max-queue-delay-ms": delay_ms,
            "--log-level": "WARNING",
        }
        cmd = [sys.executable, "-m", "server", *(str(x) for kv in flags.items() for x in kv)]
        if echo:
            cmd = [sys.executable, "-m", "bench.echo_server"]
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = ""
        while "gRPC on" not in line:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line and self.process.poll() is not None:
                raise RuntimeError("server did not start")
        self.address = "127.0.0.1:" + re.search(r":(\d+),", line).group(1)  # type: ignore[union-attr]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def timed(calls: Callable[[], Awaitable[int]], seconds: float, concurrency: int) -> float:
    """Images/s with `concurrency` callers looping for `seconds` (after one warm-up call)."""
    await calls()
    stop = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            n = await calls()  # not `done += await ...`: that reads `done` before awaiting
            done += n

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def server_rates(address: str, model: str, seconds: float, small_only: bool) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GeneratorStub(channel)

        async def one() -> int:
            await stub.Sample(pb.SampleRequest(model=model, count=1, seed=1))
            return 1

        async def big() -> int:
            await stub.Sample(pb.SampleRequest(model=model, count=256, seed=1))
            return 256

        async def stream() -> int:
            n = 0
            async for chunk in stub.SampleStream(
                pb.SampleRequest(model=model, count=4096, chunk_size=256)
            ):
                n += chunk.images.shape[0]
            return n

        rates = {"64 concurrent x 1": await timed(one, seconds, 64)}
        if not small_only:
            rates["unary x 256"] = await timed(big, seconds, 2)
            rates["stream, chunks of 256"] = await timed(stream, seconds, 1)
        return rates


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="mnist-dcgan")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="cuda: the same matrix on the GPU (onnxruntime-gpu)",
    )
    p.add_argument("--repository", type=Path, default=ROOT / "models")
    args = p.parse_args()
    path = args.repository / args.model / "1" / "model.onnx"
    raw = {b: raw_rate(path, b, args.seconds, args.threads, args.device) for b in (1, 64, 256)}
    on = Server(args.threads, 64, 2.0, device=args.device, repository=args.repository)
    try:
        batched = asyncio.run(server_rates(on.address, args.model, args.seconds, False))
    finally:
        on.close()
    off = Server(args.threads, 1, 0.0, device=args.device, repository=args.repository)
    try:
        unbatched = asyncio.run(server_rates(off.address, args.model, args.seconds, True))
    finally:
        off.close()
    echo = Server(args.threads, 1, 0.0, echo=True)
    try:
        ceiling = asyncio.run(server_rates(echo.address, args.model, args.seconds, True))
    finally:
        echo.close()
    rows = [
        ("raw ONNX Runtime, batch 1", raw[1], ""),
        ("raw ONNX Runtime, batch 64", raw[64], ""),
        ("raw ONNX Runtime, batch 256", raw[256], ""),
        (
            "server: unary calls of 256 (2 callers)",
            batched["unary x 256"],
            f"{batched['unary x 256'] / raw[256]:.2f}x raw@256",
        ),
        (
            "server: stream, chunks of 256",
            batched["stream, chunks of 256"],
            f"{batched['stream, chunks of 256'] / raw[256]:.2f}x raw@256",
        ),
        (
            "server: 64 concurrent single-image calls",
            batched["64 concurrent x 1"],
            f"{batched['64 concurrent x 1'] / raw[64]:.2f}x raw@64",
        ),
        (
            "server, batching off (max batch 1): same",
            unbatched["64 concurrent x 1"],
            f"{unbatched['64 concurrent x 1'] / raw[64]:.2f}x raw@64",
        ),
        (
            "gRPC alone, no model (bench.echo_server)",
            ceiling["64 concurrent x 1"],
            f"{ceiling['64 concurrent x 1'] / raw[64]:.2f}x raw@64",
        ),
    ]
    print(
        f"model {args.model} on {args.device}, {args.threads} ONNX Runtime threads, "
        f"{args.seconds:g} s per row, {os.cpu_count()} CPU cores, onnxruntime {ort.__version__}"
    )
    print_table(rows)
    return 0


def print_table(rows: list[tuple[str, float, str]]) -> None:
    """A Markdown table of (case, images/s, ratio) rows, ready for docs/benchmarks.md."""
    width = max(len(name) for name, _, _ in rows)
    print(
        f"| {'case':<{width}} | {'images/s':>9} | ratio |\n|{'-' * (width + 2)}|{'-' * 11}|-------|"
    )
    for name, rate, ratio in rows:
        print(f"| {name:<{width}} | {rate:>9.0f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
