"""ganserve.data's DataLoader against the raw stream it reads, side by side in one run.

    .venv/bin/python -m bench.data [--model mnist-cgan] [--count 20000] [--workers 2]

Starts the server (a subprocess on port 0), then measures: one GenerateStream (SampleStream
for an unconditional model) of `count` images read by the SDK (the ceiling), and a
`DataLoader(SyntheticDataset(...), batch_size=256, num_workers=W)` delivering the same images as
uint8 [256, C, H, W] batches to the training loop (worker start-up included), and the same
in the main process (`num_workers=0`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from torch.utils.data import DataLoader

from bench.bulk import print_table
from bench.serving import ROOT, Server, ganserve
from ganserve import Client
from ganserve.data import SyntheticDataset


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="mnist-cgan")
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()
    server = Server("ganserve", ganserve(ROOT / "models", "cpu", []))
    try:
        with Client(server.address) as client:
            conditional = client.describe_model(args.model).kind == "conditional"

            def stream(n: int) -> int:
                kwargs = dict(seed=1, chunk_size=256)
                calls = (
                    client.generate_stream(args.model, n, balanced=True, **kwargs)
                    if conditional
                    else client.sample_stream(args.model, n, **kwargs)
                )
                return sum(len(batch) for batch in calls)

            stream(1000)  # warm-up
            start = time.perf_counter()
            ceiling = stream(args.count) / (time.perf_counter() - start)
        rows = [("SDK reading one stream (chunks of 256)", ceiling, "")]
        dataset = SyntheticDataset(server.address, args.model, count=args.count, seed=1)
        for workers in (args.workers, 0):
            loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers)
            start = time.perf_counter()
            n = sum(len(images) for images, _ in loader)
            rate = n / (time.perf_counter() - start)
            rows.append(
                (
                    f"DataLoader, {workers} workers, batches of {args.batch_size}",
                    rate,
                    f"{rate / ceiling:.2f}x stream",
                )
            )
    finally:
        server.close()
    print(f"model {args.model}, {args.count} images, {os.cpu_count()} CPU cores")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
