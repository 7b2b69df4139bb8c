"""--workers: several server processes on one port, one metrics endpoint, the same bytes."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np

from ganserve.server.config import ServerConfig, parse
from ganserve.server.workers import worker_command
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc
from tests.servers import DCGAN, ServerProcess, images


def test_a_worker_gets_exactly_the_supervisors_settings() -> None:
    config = ServerConfig(
        model_repository=Path("/srv/models"),
        port=9000,
        intra_op_spinning=True,
        max_queue_delay_ms=0.5,
        workers=1,
        reuse_port=True,
    )
    argv = worker_command(config)
    assert argv[1:3] == ["-m", "ganserve.server"]
    assert parse(argv[3:]) == config


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_two_workers_share_the_port_and_the_metrics_and_drain_on_sigterm() -> None:
    flags = ("--metrics-port", "0", "--workers", "2", "--instances", "1", "--intra-op-threads", "1")
    with ServerProcess(*flags, "--grace-seconds", "5") as server:
        process, port, line = server.process, server.port, server.line
        assert "(2 workers)" in line, line
        metrics_port = int(re.search(r"metrics on port (\d+)", line).group(1))  # type: ignore[union-attr]
        workers = children(process.pid)
        assert len(workers) == 2

        parts = []
        for i in range(12):  # one connection each: the kernel spreads them over the workers
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                stub = pb_grpc.GeneratorStub(channel)
                request = pb.SampleRequest(model=DCGAN, count=5, seed=3, start_index=5 * i)
                parts.append(images(stub.Sample(request)))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = pb.SampleRequest(model=DCGAN, count=60, seed=3)
            whole = images(pb_grpc.GeneratorStub(channel).Sample(request))
        assert np.concatenate(parts).tobytes() == whole.tobytes()

        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        counted = re.search(
            r'ganserve_requests_total\{code="OK",method="Sample",model="mnist-dcgan"\} (\S+)', text
        )
        assert counted and float(counted.group(1)) == 13  # both workers' calls, summed
        assert re.search(
            r'ganserve_model_state\{model="mnist-dcgan",state="ready",version="1"\} 1\.0', text
        )

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{w}") for w in workers):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            time.sleep(0.05)
