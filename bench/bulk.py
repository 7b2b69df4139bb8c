"""The bulk job against the server's own streaming throughput, side by side in one run.

    .venv/bin/python -m bench.bulk [--model mnist-dcgan] [--count 20000]

Starts the server (a subprocess on port 0), then measures: one SampleStream of `count` images
read by the SDK (the ceiling), and `ganserve generate` writing the same images in every format
(NPZ shards, PNG files, WebDataset tars, Parquet files) into a temporary folder, with each
format's ratio to the stream and to NPZ. Target (issue #5): NPZ ≥ 0.8x the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

from bench.serving import ROOT, Server, ganserve
from ganserve import Client
from ganserve.bulk import FORMATS, run_job


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="mnist-dcgan")
    p.add_argument("--count", type=int, default=20000)
    args = p.parse_args()
    server = Server("ganserve", ganserve(ROOT / "models", "cpu", []))
    try:
        with Client(server.address) as client:
            sum(len(b) for b in client.sample_stream(args.model, 1000))  # warm-up
            start = time.perf_counter()
            n = sum(len(b) for b in client.sample_stream(args.model, args.count, chunk_size=256))
            stream = n / (time.perf_counter() - start)
        rows = [("SDK reading one SampleStream (chunks of 256)", stream, "")]
        npz = 0.0
        for fmt in FORMATS:
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                asyncio.run(
                    run_job(
                        [server.address], args.model, out, count=args.count, fmt=fmt, quiet=True
                    )
                )
                rate = args.count / (time.perf_counter() - start)
            npz = npz or rate  # npz is the first format
            ratio = f"{rate / stream:.2f}x stream, {rate / npz:.2f}x npz"
            rows.append((f"ganserve generate --format {fmt} (2 streams)", rate, ratio))
    finally:
        server.close()
    print(f"model {args.model}, {args.count} images, {os.cpu_count()} CPU cores")
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
