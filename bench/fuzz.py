"""Many random requests for every rpc against a real server; prints what it tried and got.

    .venv/bin/python -m bench.fuzz [--cases 100000] [--seed 0]

The strategies are the test suite's (`tests/server/test_fuzz.py`, built from the proto's
descriptors; the suite runs 300 of them). The server runs in this process on port 0 with the
shipped models. It stops at the first INTERNAL or UNKNOWN answer, printing the request.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import grpc
from hypothesis import HealthCheck, given, seed, settings

from tests.server.test_fuzz import REQUESTS, call
from tests.servers import BASE, RunningServer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    server = RunningServer(BASE)
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    bad: list[tuple[str, object, str]] = []
    started = time.perf_counter()

    @seed(args.seed)
    @settings(
        max_examples=args.cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(REQUESTS)
    def run(case: tuple[str, object]) -> None:
        code = call(server, *case)
        seen[(case[0], code.name)] += 1
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            bad.append((case[0], case[1], code.name))
            raise AssertionError(f"{case[0]} answered {code.name}")

    try:
        run()
    except AssertionError:
        pass
    finally:
        server.stop()
    print(f"{sum(seen.values())} cases in {time.perf_counter() - started:.0f} s")
    for (method, code), n in sorted(seen.items()):
        print(f"  {method:16} {code:20} {n}")
    for method, request, code in bad[-1:]:
        print(f"FAILED: {method} -> {code}\n{request}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
