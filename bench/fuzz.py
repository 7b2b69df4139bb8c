"""Many random requests for every rpc against a real server; prints what it tried and got.

    .venv/bin/python -m bench.fuzz [--cases 100000] [--seed 0]

The strategies are the test suite's (`tests/server/test_fuzz.py`, built from both protos'
descriptors, plus hostile PNGs and OIP parameters; the suite runs 1,400 of them). The server is
`python -m ganserve.server` on port 0 with the shipped models, in its own process, so that its
RSS is its own (hypothesis's bookkeeping grows in this one). It stops at the first INTERNAL or
UNKNOWN answer, printing the request. Half the cases are messages (ganserve.v1, the OIP, PNG
translations, ModelInfer), half mutated bytes. The server's RSS is read every 1,000 cases:
the run fails (exit status 1) if it ends above 1.25x what it was after the first 1,000.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from types import SimpleNamespace

import grpc
from hypothesis import HealthCheck, given, seed, settings

from ganserve.v1 import ganserve_pb2_grpc as pb_grpc
from tests.server.test_fuzz import EVERYTHING, call
from tests.servers import ServerProcess, rss_mb


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    process = ServerProcess("--intra-op-threads", "1")
    channel = grpc.insecure_channel(process.address)
    server = SimpleNamespace(channel=channel, stub=pb_grpc.GeneratorStub(channel))
    pid = process.process.pid
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    bad: list[tuple[str, object, str]] = []
    started = time.perf_counter()
    rss: list[float] = []

    @seed(args.seed)
    @settings(
        max_examples=args.cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(EVERYTHING)
    def run(case: tuple) -> None:
        code = call(server, *case)
        seen[(case[0], code.name)] += 1
        if sum(seen.values()) % 1000 == 0:
            rss.append(rss_mb(pid))
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            bad.append((case[0], case[1], code.name))
            raise AssertionError(f"{case[0]} answered {code.name}")

    try:
        run()
    except AssertionError:
        pass
    finally:
        rss.append(rss_mb(pid))
        channel.close()
        process.stop()
    print(f"{sum(seen.values())} cases in {time.perf_counter() - started:.0f} s")
    growth = rss[-1] / rss[0] - 1 if len(rss) > 1 else 0.0
    print(
        f"server RSS {rss[0]:.0f} MB after 1,000 cases, at most {max(rss):.0f} MB, "
        f"{rss[-1]:.0f} MB at the end ({growth:+.0%})"
    )
    for (method, code), n in sorted(seen.items()):
        print(f"  {method:16} {code:20} {n}")
    for method, request, code in bad[-1:]:
        print(f"FAILED: {method} -> {code}\n{request}")
    return 1 if bad or growth > 0.25 else 0


if __name__ == "__main__":
    sys.exit(main())
