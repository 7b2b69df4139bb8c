"""What the quality probe costs the callers: ganserve with `--quality-probe-seconds` against
the same server without it, under load, in one run.

    .venv/bin/python -m bench.quality_probe [--seconds 3] [--rounds 2] [--every 0.1]

Both servers serve mnist-dcgan and mnist-cgan (a repository of links to the shipped ones).
The load hits mnist-dcgan while the probe-on server probes both models back to back
(`--every` seconds apart). Cells: closed loops of 1 x 1, 64 x 1 and 8 x 16 (every caller on
one shared channel, as bench.serving, or each on a connection of its own with `--shape own`),
in which the probe should find no quiet and do nothing,
and a paced caller (one image every `--gap` seconds, for 3x `--seconds`), between whose calls
the probe runs: the cell that shows what a call arriving during a probe chunk pays. Rounds
are interleaved and the median round of each cell reported. While one server is measured the
other is stopped (SIGSTOP, then SIGCONT), so the probe-off figures carry none of the other's
probing. Each cell gives images/s, the median and the 99th-percentile call time, and the
probes each model finished during it (from /metrics).

`--beside` measures instead what probing costs a loaded server (no probe of its own) when it
runs beside it in a process of its own, at nice 19 or SCHED_IDLE: why the probe keeps out of
load rather than relying on a low priority under it (server/quality.py, QUIET_S).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc

from bench.serving import OWN, ROOT, SHARED, Cell, Server, ganserve, load, pb, pb_grpc

MODELS = ("mnist-dcgan", "mnist-cgan")
PACED = (1, 0)  # the paced caller's cell: 1 caller, one image per call, a gap between calls
CELLS = ((1, 1), (64, 1), (8, 16), PACED)  # (callers, images per call)
# a probe loop in a process of its own, at the priority argv[1] names (--beside)
PROBING = """
import os, sys
os.setpriority(os.PRIO_PROCESS, 0, 19)
if sys.argv[1] == "idle":
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
from ganserve.server.quality import Judge, probe
from ganserve.server.runner import Runner
judge = Judge(sys.argv[2])
while True:
    runner = Runner(sys.argv[3], device="cpu", threads=1)
    probe(judge, runner.card, runner.run)
"""


async def paced(server: Server, model: str, gap: float, seconds: float) -> Cell:
    """One caller on one channel, a one-image call every `gap` seconds for `seconds`."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GeneratorStub(channel)
        await stub.Sample(pb.SampleRequest(model=model, count=1, seed=1))  # connect
        times: list[float] = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await stub.Sample(pb.SampleRequest(model=model, count=1, seed=1))
            times.append(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, gap - times[-1]))
    times.sort()
    p99 = 1000 * times[int(0.99 * (len(times) - 1))]
    return Cell(len(times) / seconds, 1000 * statistics.median(times), len(times), p99_ms=p99)


def probes(server: Server) -> dict[str, float]:
    """Quality probes finished so far, by model (0 where none yet)."""
    found = re.search(r"metrics on port (\d+)", server.line)
    if found is None:
        return {}
    url = f"http://127.0.0.1:{found.group(1)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    counts = dict.fromkeys(MODELS, 0.0)
    for line in text.splitlines():
        if line.startswith("ganserve_model_quality_probes_total{"):
            head, value = line.rsplit(" ", 1)
            model = re.search(r'model="([^"]+)"', head).group(1)  # type: ignore[union-attr]
            counts[model] = counts.get(model, 0.0) + float(value)
    return counts


@contextlib.contextmanager
def paused(others: list[Server]) -> Iterator[None]:
    """`others` stopped (SIGSTOP) for the block, and continued after it, whatever happens."""
    for server in others:
        os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for server in others:
            os.kill(server.process.pid, signal.SIGCONT)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality_probe", description=__doc__)
    p.add_argument("--seconds", type=float, default=3.0, help="per cell and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--every", type=float, default=0.1, help="--quality-probe-seconds")
    p.add_argument("--gap", type=float, default=0.25, help="seconds between the paced calls")
    p.add_argument("--beside", action="store_true", help="probing from another process")
    p.add_argument("--shape", choices=("shared", "own"), default="shared",
                   help="the callers on one shared channel, or a connection each")  # fmt: skip
    args = p.parse_args()
    shape = SHARED if args.shape == "shared" else OWN
    if args.beside:
        return beside(args)
    with tempfile.TemporaryDirectory() as folder:
        repository = Path(folder)
        for model in MODELS:
            (repository / model).symlink_to(ROOT / "models" / model)
        judge = str(ROOT / "judges" / "judge.onnx")
        probe_flags = ["--quality-probe-seconds", str(args.every), "--quality-judge", judge]
        servers = {
            "probe off": Server("probe off", ganserve(repository, "cpu", [])),
            "probe on": Server(
                "probe on", ganserve(repository, "cpu", [*probe_flags, "--metrics-port", "0"])
            ),
        }
        runs: dict[tuple[int, int], dict[str, list[tuple[Cell, dict[str, float]]]]] = {
            cell: {name: [] for name in servers} for cell in CELLS
        }
        try:
            for r in range(args.rounds):
                for clients, count in CELLS:
                    for name, server in servers.items():
                        before = probes(server)
                        others = [s for s in servers.values() if s is not server]
                        with paused(others):
                            if (clients, count) == PACED:
                                work = paced(server, MODELS[0], args.gap, 3 * args.seconds)
                            else:
                                work = load(server, MODELS[0], clients, count, args.seconds, shape)
                            cell = asyncio.run(work)
                        after = probes(server)
                        done = {m: after[m] - before.get(m, 0.0) for m in after}
                        runs[(clients, count)][name].append((cell, done))
                        print(f"  {r + 1} {clients} x {count} {name}: {cell}", file=sys.stderr)
        finally:
            for server in servers.values():
                server.close()
    print(f"\n### quality probe every {args.every} s: {MODELS[0]} under load, {shape}")
    print(f"median of {args.rounds} interleaved rounds of {args.seconds:g} s per cell\n")
    print("| load | off: images/s | p50 ms | p99 ms | on: images/s | p50 ms | p99 ms | on / off "
          f"| probes: {MODELS[0]} | {MODELS[1]} |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (clients, count), by_name in runs.items():
        row = [
            f"paced, 1 x 1 every {args.gap:g} s"
            if (clients, count) == PACED
            else f"{clients} x {count}"
        ]
        medians = {}
        for name in servers:
            cells = sorted(by_name[name], key=lambda c: c[0].images_per_second)
            medians[name] = cells[len(cells) // 2]
            cell = medians[name][0]
            row += [f"{cell.images_per_second:,.0f}", f"{cell.p50_ms:.2f}", f"{cell.p99_ms:.2f}"]
        ratio = medians["probe on"][0].images_per_second / medians["probe off"][0].images_per_second
        done = [statistics.mean(c[1].get(m, 0.0) for c in by_name["probe on"]) for m in MODELS]
        row += [f"{ratio:.2f}x", *(f"{d:.1f}" for d in done)]
        print("| " + " | ".join(row) + " |")
    return 0


def beside(args: argparse.Namespace) -> int:
    """A server with no probe under load, alone and beside a probe loop in another process."""
    modes = {"alone": None, "probing at nice 19": "nice", "probing at SCHED_IDLE": "idle"}
    cells = CELLS[1:3]
    shape = SHARED if args.shape == "shared" else OWN
    runs: dict[tuple[str, tuple[int, int]], list[Cell]] = {}
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / MODELS[0]).symlink_to(ROOT / "models" / MODELS[0])
        server = Server("ganserve", ganserve(Path(folder), "cpu", []))
        judge = str(ROOT / "judges" / "judge.onnx")
        model = str(ROOT / "models" / MODELS[1] / "1" / "model.onnx")
        try:
            for r in range(args.rounds):
                for mode, priority in modes.items():
                    loop = None
                    if priority is not None:
                        cmd = [sys.executable, "-c", PROBING, priority, judge, model]
                        loop = subprocess.Popen(cmd, cwd=ROOT)
                        time.sleep(1.5)  # its imports and first session
                    try:
                        for clients, count in cells:
                            cell = asyncio.run(
                                load(server, MODELS[0], clients, count, args.seconds, shape)
                            )
                            runs.setdefault((mode, (clients, count)), []).append(cell)
                            print(f"  {r + 1} {clients} x {count} {mode}: {cell}", file=sys.stderr)
                    finally:
                        if loop is not None:
                            loop.kill()
                            loop.wait()
        finally:
            server.close()
    print(f"\n### probing beside a loaded server, from another process: {MODELS[0]}, {shape}")
    print(f"median of {args.rounds} interleaved rounds of {args.seconds:g} s per cell\n")
    print("| load | " + " | ".join(f"{m}: images/s | p50 ms" for m in modes) + " | ratios |")
    print("|---|" + "---:|---:|" * len(modes) + "---:|")
    for clients, count in cells:
        medians = []
        for mode in modes:
            found = sorted(runs[(mode, (clients, count))], key=lambda c: c.images_per_second)
            medians.append(found[len(found) // 2])
        row = [f"{clients} x {count}"]
        row += [f"{c.images_per_second:,.0f} | {c.p50_ms:.1f}" for c in medians]
        base = medians[0].images_per_second
        row.append(" / ".join(f"{c.images_per_second / base:.2f}x" for c in medians[1:]))
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
