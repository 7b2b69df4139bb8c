"""What the quality probe costs the callers: ganserve with `--quality-probe-seconds` against
the same server without it, under load, in one run.

    .venv/bin/python -m bench.quality_probe [--seconds 3] [--rounds 2] [--every 0.1]

Both servers serve mnist-dcgan and mnist-cgan (a repository of links to the shipped ones).
The load hits mnist-dcgan, so its probe waits for idle moments (the batcher idle) while the
idle mnist-cgan is probed back to back (`--every` seconds apart), on the probe's nice-19
thread, beside the callers: both ways a probe could get in a caller's way. Cells (closed
loop, every caller on one shared channel, as bench.serving): 1 x 1, 64 x 1 and 8 x 16,
interleaved, the median round of each reported. Each cell gives images/s, the median and the
99th-percentile call time, and the probes each model finished during it (from /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

from bench.serving import ROOT, SHARED, Cell, Server, ganserve, load

MODELS = ("mnist-dcgan", "mnist-cgan")
CELLS = ((1, 1), (64, 1), (8, 16))  # (callers, images per call)


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


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality_probe", description=__doc__)
    p.add_argument("--seconds", type=float, default=3.0, help="per cell and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--every", type=float, default=0.1, help="--quality-probe-seconds")
    args = p.parse_args()
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
                        cell = asyncio.run(
                            load(server, MODELS[0], clients, count, args.seconds, SHARED)
                        )
                        after = probes(server)
                        done = {m: after[m] - before.get(m, 0.0) for m in after}
                        runs[(clients, count)][name].append((cell, done))
                        print(f"  {r + 1} {clients} x {count} {name}: {cell}", file=sys.stderr)
        finally:
            for server in servers.values():
                server.close()
    print(f"\n### quality probe every {args.every} s: {MODELS[0]} under load, shared channel")
    print(f"median of {args.rounds} interleaved rounds of {args.seconds:g} s per cell\n")
    print("| load | off: images/s | p50 ms | p99 ms | on: images/s | p50 ms | p99 ms | on / off "
          f"| probes: {MODELS[0]} | {MODELS[1]} |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (clients, count), by_name in runs.items():
        row = [f"{clients} x {count}"]
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


if __name__ == "__main__":
    raise SystemExit(main())
