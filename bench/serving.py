"""ganserve against what a user would pick instead, and against ONNX Runtime's own best: one run.

    .venv/bin/python -m bench.serving                       # both models, 3 rounds of 5 s
    .venv/bin/python -m bench.serving --seconds 3 --rounds 1 --models mnist-dcgan
    .venv/bin/python -m bench.serving --variant "1x2=--instances 1 --intra-op-threads 2"

For each model (the shipped 32x32 `mnist-dcgan`, and the standard DCGAN 64x64x3 that
`bench.make_dcgan64` exports to runs/bench-models):

1. In-process ONNX Runtime, no server: one session with `--threads` intra-op threads, spinning
   on and off, and `--threads` sessions of one thread each called from as many threads; at
   batches 1, 16, 64 and 256. The best of all of them is "raw best".
2. Servers, each a subprocess on a free port, all up at once and idle between cells: the plain
   server (`bench.plain_server`: the grpc tutorial's thread pool, one ONNX Runtime call per
   request, `--threads` intra-op threads, spinning off), ganserve at its defaults, ganserve
   `--workers 2`, any `--variant`, and a gRPC server that computes nothing
   (`bench.echo_server`) for the single-image cells.
3. Closed-loop load, interleaved (every server in turn at one cell before the next cell, and
   the whole matrix `--rounds` times; the median round of each cell is reported): 1 and
   64 clients x 1 image, 8 clients x 16 and x 256 images, each in two shapes: every client
   on one shared grpc.aio channel (what a client service does, as gRPC advises) and every
   client on a connection of its own (so `--workers` sees them spread); and one client
   reading 4,096-image streams in chunks of 256. Cells give images/s and the median call time.
4. Server CPU per call: the CPU time the server's processes used over a cell (user + system,
   from /proc, its worker processes included), over the calls it answered; the echo server's
   is gRPC's own cost for a call. Echo's plus one image's run on a one-thread session is the
   floor: run alone (unbatched), or in a batch of 64 (batched), under which no server on this
   gRPC stack can go for a single-image call.

The load generator is this process, on the same cores as the servers: every server pays for
it alike. Figures move between runs on a shared machine; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import onnxruntime as ort

from ganserve.export.metadata import example_inputs
from ganserve.server.runner import Runner
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc
from tests.servers import stop_process

ROOT = Path(__file__).resolve().parents[1]
BENCH_MODELS = ROOT / "runs" / "bench-models"
SHARED, OWN = "shared channel", "own connections"
# (name, clients, images per call, load shape); count 0 marks the streaming cell
CELLS = (
    *(
        (f"{clients} x {count}, {shape}", clients, count, shape)
        for clients, count in ((1, 1), (64, 1), (8, 16), (8, 256))
        for shape in (SHARED, OWN)
    ),
    ("stream, chunks of 256", 1, 0, OWN),
)
CPU_CELLS = (f"64 x 1, {SHARED}", f"64 x 1, {OWN}")  # where per-call server CPU is reported
STREAM_COUNT, STREAM_CHUNK = 4096, 256


# -- in-process ONNX Runtime ----------------------------------------------------------------


def session(path: Path, threads: int, spinning: bool, device: str = "cpu") -> Runner:
    """One ONNX Runtime session through the server's own Runner: the same session options,
    and IO binding on CUDA, as the server uses."""
    return Runner(path, device=device, threads=threads, spinning=spinning)


def raw_rate(sessions: list[Runner], batch: int, seconds: float) -> float:
    """Images/s with one caller thread per entry of `sessions` (an entry may repeat: concurrent
    runs of one session), each looping on `run` at `batch`."""
    feeds = example_inputs(sessions[0].card, batch)
    for s in sessions:
        s.run(feeds)
    done = [0] * len(sessions)
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            sessions[i].run(feeds)
            done[i] += batch

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(sessions))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - started)


def run_cpu_us(runner: Runner, batch: int, seconds: float) -> float:
    """CPU µs per image of runs at `batch` on `runner` (a one-thread session: no pool to wake),
    called back to back from this thread."""
    feeds = example_inputs(runner.card, batch)
    runner.run(feeds)
    runs, stop = 0, time.perf_counter() + seconds
    started = time.process_time()
    while time.perf_counter() < stop:
        runner.run(feeds)
        runs += 1
    return 1e6 * (time.process_time() - started) / (runs * batch)


def raw_table(
    path: Path, threads: int, seconds: float, device: str
) -> dict[str, tuple[float, int]]:
    """Each ONNX Runtime setting's best images/s and the batch it came at."""
    if device == "cuda":  # the CPU threads hardly matter; streams do
        settings = {
            f"{n} session(s), side by side": lambda n=n: [
                session(path, 1, False, device) for _ in range(n)
            ]
            for n in (1, 2)
        }
    else:
        settings = {
            f"1 session x {threads} threads, spinning": lambda: [session(path, threads, True)],
            f"1 session x {threads} threads, no spinning": lambda: [session(path, threads, False)],
            f"{threads} sessions x 1 thread, side by side": lambda: [
                session(path, 1, False) for _ in range(threads)
            ],
            f"1 session x 1 thread, {threads} callers at once": lambda: (
                [session(path, 1, False)] * threads
            ),
        }
    best = {}
    for name, make in settings.items():
        rates = {b: raw_rate(make(), b, seconds) for b in (1, 16, 64, 256)}
        batch = max(rates, key=rates.__getitem__)
        best[name] = (rates[batch], batch)
    return best


# -- servers and load -----------------------------------------------------------------------


class Server:
    """A server subprocess that prints `gRPC on HOST:PORT,` once it takes calls."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        deadline = time.monotonic() + 300
        line = ""
        while "gRPC on" not in line:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if (not line and self.process.poll() is not None) or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{name}: did not start ({' '.join(cmd)})")
        self.address = "127.0.0.1:" + re.search(r":(\d+),", line).group(1)  # type: ignore[union-attr]
        self.line = line  # the ready line (ganserve's names its metrics port)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server and every process under it so far."""
        return _tree_cpu(self.process.pid)

    def close(self) -> None:
        stop_process(self.process, 60)


def _tree_cpu(root: int) -> float:
    """CPU seconds of process `root` and its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    tree, changed = {root}, True
    while changed:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        changed = bool(more)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def ganserve(repository: Path, device: str, extra: list[str]) -> list[str]:
    """`python -m ganserve.server` on a free port, metrics off, with `extra` flags."""
    flags = [
        *("--model-repository", str(repository), "--device", device, "--port", "0"),
        *("--metrics-port", "-1", "--log-level", "WARNING"),
    ]
    return [sys.executable, "-m", "ganserve.server", *flags, *extra]


@dataclass
class Cell:
    images_per_second: float
    p50_ms: float
    calls: int = 0
    p99_ms: float = 0.0
    cpu_us_per_call: float = 0.0  # the server's CPU time over the cell, per call

    def __str__(self) -> str:
        p50 = f"{self.p50_ms:.2f}" if self.p50_ms < 10 else f"{self.p50_ms:.0f}"
        return f"{self.images_per_second:,.0f} ({p50})"


async def load(
    server: Server, model: str, clients: int, count: int, seconds: float, shape: str = OWN
) -> Cell:
    """Closed loop: `clients` callers for `seconds`, on one shared channel or each on its
    own connection (`shape`)."""
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
    address = server.address
    channels = [
        grpc.aio.insecure_channel(address, options=options)
        for _ in range(1 if shape == SHARED else clients)
    ]
    stubs = [pb_grpc.GeneratorStub(channels[i % len(channels)]) for i in range(clients)]

    def caller(stub: pb_grpc.GeneratorStub) -> Callable[[], Awaitable[int]]:
        async def unary() -> int:
            reply = await stub.Sample(pb.SampleRequest(model=model, count=count, seed=1))
            return reply.images.shape[0]

        async def stream() -> int:
            n = 0
            request = pb.SampleRequest(model=model, count=STREAM_COUNT, chunk_size=STREAM_CHUNK)
            async for chunk in stub.SampleStream(request):
                n += chunk.images.shape[0]
            return n

        return unary if count else stream

    calls = [caller(s) for s in stubs]
    times: list[float] = []
    done = 0
    try:
        await asyncio.gather(*(call() for call in calls))  # connect and warm up
        stop = time.perf_counter() + seconds

        async def client(call: Callable[[], Awaitable[int]]) -> None:
            nonlocal done
            while time.perf_counter() < stop:
                started = time.perf_counter()
                n = await call()
                times.append(time.perf_counter() - started)
                done += n

        cpu = server.cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(client(call) for call in calls))
        elapsed, cpu = time.perf_counter() - started, server.cpu_seconds() - cpu
    finally:
        for c in channels:
            await c.close()
    calls_made = len(times)
    p99 = 1000 * sorted(times)[int(0.99 * (calls_made - 1))]
    cpu_us = 1e6 * cpu / calls_made
    p50 = 1000 * statistics.median(times)
    return Cell(done / elapsed, p50, calls_made, cpu_us_per_call=cpu_us, p99_ms=p99)


# -- the run --------------------------------------------------------------------------------


def model_path(repository: Path, model: str) -> Path:
    path = repository / model / "1" / "model.onnx"
    if not path.exists() and model == "dcgan64":
        subprocess.run([sys.executable, "-m", "bench.make_dcgan64"], cwd=ROOT, check=True)
    return path


def bench_model(model: str, args: argparse.Namespace) -> None:
    repository = BENCH_MODELS if model == "dcgan64" else ROOT / "models"
    path = model_path(repository, model)
    probe = session(path, 1, False)
    card = probe.card
    raw = {} if args.no_raw else raw_table(path, args.threads, args.raw_seconds, args.device)
    raw_best = max((rate for rate, _ in raw.values()), default=float("nan"))
    # the compute a single-image call cannot avoid: run alone (batch 1), or batched (64)
    cpu = args.device == "cpu"
    one_run, batched = (
        run_cpu_us(probe, b, args.raw_seconds) if cpu else float("nan") for b in (1, 64)
    )
    variants = {"ganserve": [], "ganserve --workers 2": ["--workers", "2"]}
    for spec in args.variant:
        name, _, flags = spec.partition("=")
        variants[f"ganserve {name}"] = shlex.split(flags)
    commands = {
        "plain": [
            *(sys.executable, "-m", "bench.plain_server", "--model", str(path)),
            *("--threads", str(args.threads), "--device", args.device),
        ],
        **{name: ganserve(repository, args.device, extra) for name, extra in variants.items()},
        "echo": [
            *(sys.executable, "-m", "bench.echo_server", "--shape"),
            *(str(card.height), str(card.width), str(card.channels)),
        ],
    }
    envs: dict[str, dict[str, str]] = {}
    receiver = None
    if args.traced:  # every call sampled, its spans exported to a receiver of their own
        receiver = Server("otlp", [sys.executable, "-m", "bench.otlp_receiver", "--port", "0"])
        commands["ganserve traced"] = ganserve(repository, args.device, [])
        envs["ganserve traced"] = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://" + receiver.address,
            "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true",
        }
    servers = {name: Server(name, cmd, envs.get(name)) for name, cmd in commands.items()}
    cells = [c for c in CELLS if any(part in c[0] for part in args.cells)]
    runs: dict[str, dict[str, list[Cell]]] = {cell: {} for cell, *_ in cells}
    try:
        for round_ in range(args.rounds):
            for cell, clients, count, shape in cells:
                for name, server in servers.items():
                    got = asyncio.run(load(server, model, clients, count, args.seconds, shape))
                    runs[cell].setdefault(name, []).append(got)
                    print(f"  {round_} {model} {cell} {name}: {got}", file=sys.stderr)
    finally:
        for server in servers.values():
            server.close()
        if receiver is not None:
            receiver.close()

    # the median round of each cell (by images/s): one slow round on a shared machine
    table = {
        cell: {n: sorted(c, key=lambda x: x.images_per_second)[len(c) // 2] for n, c in row.items()}
        for cell, row in runs.items()
    }
    print(
        f"\n### {model} ({card.height}x{card.width}x{card.channels}, nz {card.latent_size}): "
        f"{os.cpu_count()} cores, onnxruntime {ort.__version__}, {args.threads} threads, "
        f"median of {args.rounds} interleaved rounds of {args.seconds:g} s per cell\n"
    )
    print("| ONNX Runtime in-process | images/s | at batch |\n|---|---:|---:|")
    for name, (rate, batch) in raw.items():
        print(f"| {name} | {rate:,.0f} | {batch} |")
    names = [n for n in servers if n not in ("plain", "echo")]
    head = " | ".join(f"{n} | ratio" for n in names)
    print(f"\nimages/s (median call ms); ratio = over plain; raw best {raw_best:,.0f} images/s\n")
    print(f"| load | plain | {head} | echo (no model) | best / raw best |")
    print("|---|---:|" + "---:|---:|" * len(names) + "---:|---:|")
    for cell, *_ in cells:
        row, plain = table[cell], table[cell]["plain"]
        cols = " | ".join(
            f"{row[n]} | {row[n].images_per_second / plain.images_per_second:.2f}x" for n in names
        )
        echo = str(row["echo"]) if "echo" in row else ""
        best = max(row[n].images_per_second for n in names) / raw_best
        print(f"| {cell} | {plain} | {cols} | {echo} | {best:.2f}x |")
    print("\nserver CPU per call, µs (user + system, worker processes included); floor = echo's")
    print(f"cost plus one image's run on a one-thread session: {one_run:,.0f} µs of CPU run alone")
    print(f"(unbatched), {batched:,.0f} µs in a batch of 64 (batched). Under the batched floor no")
    print("server on this gRPC stack can go for a single-image call\n")
    head = " | ".join(servers)
    print(f"| load | {head} | floor, unbatched | batched | ganserve / echo | floors / echo |")
    print("|---|" + "---:|" * (len(servers) + 4))
    for cell in (c for c in CPU_CELLS if c in table):
        row = table[cell]
        cols = " | ".join(f"{row[n].cpu_us_per_call:,.0f}" for n in servers)
        echo = row["echo"].cpu_us_per_call
        alone, together = echo + one_run, echo + batched
        ratio = row["ganserve"].cpu_us_per_call / echo
        floors = f"{alone / echo:.2f}x / {together / echo:.2f}x"
        print(f"| {cell} | {cols} | {alone:,.0f} | {together:,.0f} | {ratio:.2f}x | {floors} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mnist-dcgan", "dcgan64"])
    p.add_argument("--seconds", type=float, default=5.0, help="per server, cell and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median counts")
    p.add_argument("--raw-seconds", type=float, default=2.0, help="per ONNX Runtime setting")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--cells",
        nargs="+",
        default=[""],
        metavar="TEXT",
        help='only the cells whose name contains one of these, e.g. "64 x 1" stream',
    )
    p.add_argument("--no-raw", action="store_true", help="skip in-process ONNX Runtime")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help='another ganserve to compare, e.g. "1x2=--instances 1 --intra-op-threads 2"',
    )
    p.add_argument(
        "--traced",
        action="store_true",
        help="also ganserve with tracing on (OTLP to a receiver here, every call sampled)",
    )
    args = p.parse_args()
    for model in args.models:
        bench_model(model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
