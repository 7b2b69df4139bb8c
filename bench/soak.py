"""Fault soak: two replicas, 64 clients through the SDK, faults mixed in, one replica restarted.

    .venv/bin/python -m bench.soak [--minutes 10] [--restart-every 120] [--clients 64]

Two `python -m ganserve.server` replicas on the shipped models. 64 SDK clients (one AsyncClient over
both addresses) loop until the time is up, each call drawn at random:

- valid calls (Sample, Generate with random labels, Translate, a SampleStream read to the end),
  each checked byte for byte against references taken at the start: image i of seed s is the
  same whatever call, batch or replica made it (the determinism contract);
- 10% malformed calls, made with a bare stub (bad counts, unknown models, the wrong rpc for the
  model, a tensor of the wrong shape, bytes that are no message): each must be refused with a
  client error;
- cancels (a stream dropped after its first chunk), tight deadlines (4,096 images in 50 ms) and
  large translations (4 x 512 x 512 pixels).

Every `--restart-every` seconds one replica gets SIGTERM, drains, and is started again on the
same port; the SDK's retries carry the calls over. With `--load-after-restart S` the load runs
past `--minutes` until the first restarted replica has been serving for S seconds, so that a
short run on a slow machine still puts load on a replica that came back. At the end it prints
the valid calls made, those lost (failed after the SDK's retries: must be 0), those with wrong
bytes (0), INTERNAL or UNKNOWN answers (0), and the RSS growth of the replica that was never
restarted, between a quiet moment after the warm-up and one at the end (< 5%,
`--max-rss-growth`). Exit status 1 if any bar is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

import ganserve
from ganserve.v1 import ganserve_pb2 as pb
from tests.servers import ServerProcess, rss_mb

ROOT = Path(__file__).resolve().parents[1]
DCGAN, CGAN, PIX2PIX = "mnist-dcgan", "mnist-cgan", "mnist-edges2digits"
SEEDS = 4  # reference seeds
REF_IMAGES = 1024  # reference images per seed (and per seed and label for the cgan: 64)
CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,  # the replica is restarting: a bare stub does not retry
}


class Replica(ServerProcess):
    """`python -m ganserve.server` on the shipped models, its log appended to `log`, ready once
    it reports SERVING; `port` 0 picks one, and a restart reuses it."""

    def __init__(self, port: int, log: Path) -> None:
        self.log = log
        try:
            with log.open("a") as err:
                super().__init__("--port", str(port), "--grace-seconds", "10", stderr=err)
        except RuntimeError:
            raise RuntimeError(f"a replica did not start; its log: {log}") from None
        self._wait_serving(time.monotonic() + 120)

    def _wait_serving(self, deadline: float) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"a replica never became SERVING; its log: {self.log}")
                time.sleep(0.2)

    def rss_mb(self) -> float:
        return rss_mb(self.process.pid)

    def stop(self, seconds: float = 60) -> None:
        """SIGTERM, then wait for the drain (kill after 60 s)."""
        super().stop(seconds)


@dataclass
class Tally:
    valid: int = 0
    lost: int = 0
    wrong: int = 0
    internal: int = 0
    malformed: int = 0
    cancels: int = 0
    deadlines: int = 0
    large: int = 0
    restarts: int = 0
    failed_restarts: int = 0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)

    def lose(self, what: str, exc: BaseException) -> None:
        self.lost += 1
        self.failures[f"{what}: {type(exc).__name__}: {str(exc)[:160]}"] += 1
        if isinstance(exc, ganserve.ServerError):
            self.internal += 1


class References:
    """What the valid calls must return, computed once at the start."""

    def __init__(self, client: ganserve.Client, rng: np.random.Generator) -> None:
        self.sample = [client.sample(DCGAN, REF_IMAGES, seed=s).pixels for s in range(SEEDS)]
        self.generate = {
            (s, label): client.generate(CGAN, 64, label=label, seed=s).pixels
            for s in range(SEEDS)
            for label in range(10)
        }
        self.inputs = [rng.integers(0, 256, (8, 32, 32, 1), dtype=np.uint8) for _ in range(4)]
        self.translated = [client.translate(PIX2PIX, x).pixels for x in self.inputs]
        self.large_input = rng.integers(0, 256, (4, 512, 512, 1), dtype=np.uint8)
        self.large = client.translate(PIX2PIX, self.large_input, timeout=120).pixels


def _malformed_calls() -> list[tuple[str, object]]:
    big = pb.Tensor(dtype="uint8", shape=[1, 32, 32], data=bytes(1024))  # no channel axis
    return [
        ("Sample", pb.SampleRequest(model=DCGAN, count=0)),
        ("Sample", pb.SampleRequest(model="no-such-model", count=1)),
        ("Sample", pb.SampleRequest(model=CGAN, count=1)),  # conditional: Generate
        ("Generate", pb.GenerateRequest(model=CGAN, count=3, labels=pb.LabelList(values=[1, 99]))),
        ("Sample", pb.SampleRequest(model=DCGAN, count=5000)),
        ("Translate", pb.TranslateRequest(model=PIX2PIX, images=big)),
        ("Translate", pb.TranslateRequest(model=PIX2PIX, png=[b"GIF89a" + bytes(40)])),
        ("Sample", b"\x0a\xff\xff\xff\xff"),  # not a message at all
    ]


class Soak:
    def __init__(self, args: argparse.Namespace, replicas: list[Replica], refs: References) -> None:
        self.args = args
        self.replicas = replicas
        self.refs = refs
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.paused = asyncio.Event()
        self.idle: set[int] = set()
        self.malformed = _malformed_calls()
        self.back_at: float | None = None  # when the first restarted replica was serving again

    async def client(self, number: int, sdk: ganserve.AsyncClient) -> None:
        rng = random.Random(number)
        channels = [grpc.aio.insecure_channel(r.address) for r in self.replicas]
        try:
            while not self.stop.is_set():
                if self.paused.is_set():
                    self.idle.add(number)
                    await asyncio.sleep(0.05)
                    continue
                self.idle.discard(number)
                draw = rng.random()
                if draw < 0.10:
                    await self.malformed_call(rng, rng.choice(channels))
                elif draw < 0.13:
                    await self.cancel(rng, sdk)
                elif draw < 0.16:
                    await self.deadline(sdk)
                elif draw < 0.17:
                    await self.large(sdk)
                else:
                    await self.valid(rng, sdk)
        finally:
            for channel in channels:
                await channel.close()

    async def valid(self, rng: random.Random, sdk: ganserve.AsyncClient) -> None:
        seed, kind = rng.randrange(SEEDS), rng.random()
        try:
            if kind < 0.5:
                count = rng.choice([1, 1, 2, 4, 16, 64])
                start = rng.randrange(REF_IMAGES - count)
                got = (await sdk.sample(DCGAN, count, seed=seed, start_index=start)).pixels
                want = self.refs.sample[seed][start : start + count]
            elif kind < 0.8:
                count = rng.choice([1, 3, 10, 32])
                start = rng.randrange(64 - count)
                labels = [rng.randrange(10) for _ in range(count)]
                reply = await sdk.generate(CGAN, labels=labels, seed=seed, start_index=start)
                got = reply.pixels
                want = np.stack(
                    [self.refs.generate[(seed, lab)][start + j] for j, lab in enumerate(labels)]
                )
            elif kind < 0.95:
                which = rng.randrange(len(self.refs.inputs))
                got = (await sdk.translate(PIX2PIX, self.refs.inputs[which])).pixels
                want = self.refs.translated[which]
            else:
                count = rng.choice([300, 700])
                chunks = sdk.sample_stream(DCGAN, count, seed=seed, chunk_size=128)
                got = np.concatenate([c.pixels async for c in chunks])
                want = self.refs.sample[seed][:count]
        except (ganserve.GanserveError, grpc.RpcError) as exc:
            self.tally.valid += 1
            self.tally.lose("valid call", exc)
            return
        self.tally.valid += 1
        if got.tobytes() != want.tobytes():
            self.tally.wrong += 1

    async def malformed_call(self, rng: random.Random, channel: grpc.aio.Channel) -> None:
        method, request = rng.choice(self.malformed)
        serialize = None if isinstance(request, bytes) else type(request).SerializeToString
        call = channel.unary_unary(f"/ganserve.v1.Generator/{method}", serialize)
        self.tally.malformed += 1
        try:
            await call(request, timeout=10)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                self.tally.internal += 1
                details = exc.details()  # type: ignore[attr-defined]
                self.tally.failures[f"malformed {method}: {code.name} {details}"] += 1
            elif code not in CLIENT_ERRORS:
                self.tally.failures[f"malformed {method}: {code.name}"] += 1
            return
        self.tally.failures[f"malformed {method}: accepted"] += 1

    async def cancel(self, rng: random.Random, sdk: ganserve.AsyncClient) -> None:
        self.tally.cancels += 1
        chunks = sdk.sample_stream(DCGAN, 20000, seed=rng.randrange(SEEDS), chunk_size=256)
        try:
            async for _ in chunks:
                break  # leave after the first chunk: the stream is cancelled
        except ganserve.GanserveError as exc:
            self._unexpected("cancelled stream", exc)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    async def deadline(self, sdk: ganserve.AsyncClient) -> None:
        self.tally.deadlines += 1
        try:
            await sdk.sample(DCGAN, 4096, seed=1, timeout=0.05)
        except (ganserve.DeadlineExceeded, ganserve.Overloaded, ganserve.Unavailable):
            pass  # or the last failure, when no retry fits in the deadline
        except ganserve.GanserveError as exc:
            self._unexpected("tight deadline", exc)

    async def large(self, sdk: ganserve.AsyncClient) -> None:
        self.tally.large += 1
        self.tally.valid += 1
        try:
            got = (await sdk.translate(PIX2PIX, self.refs.large_input, timeout=120)).pixels
        except ganserve.GanserveError as exc:
            self.tally.lose("large translation", exc)
            return
        if got.tobytes() != self.refs.large.tobytes():
            self.tally.wrong += 1

    def _unexpected(self, what: str, exc: ganserve.GanserveError) -> None:
        if isinstance(exc, ganserve.ServerError):
            self.tally.internal += 1
        self.tally.failures[f"{what}: {type(exc).__name__}: {str(exc)[:160]}"] += 1

    async def quiet_rss(self) -> float:
        """The never-restarted replica's RSS with no calls running (after 2 s at rest)."""
        self.paused.set()
        while len(self.idle) < self.args.clients:
            await asyncio.sleep(0.05)
        await asyncio.sleep(2)
        rss = self.replicas[0].rss_mb()
        self.paused.clear()
        return rss

    async def restarter(self, log: Path) -> None:
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), self.args.restart_every)
                return
            except TimeoutError:
                pass
            old, began = self.replicas[1], time.monotonic()
            await asyncio.to_thread(old.stop)
            drained = time.monotonic() - began
            try:
                self.replicas[1] = await asyncio.to_thread(Replica, old.port, log)
            except RuntimeError as exc:  # reported, and the run fails; the load goes on
                self.tally.failures[f"restart: {exc}"] += 1
                self.tally.failed_restarts += 1
                return
            self.tally.restarts += 1
            if self.back_at is None:
                self.back_at = time.monotonic()
            print(
                f"  replica 1 drained in {drained:.1f} s, serving again on port {old.port} "
                f"{time.monotonic() - began:.1f} s after SIGTERM",
                flush=True,
            )

    def _load_left(self, end: float) -> float:
        """Seconds the load still runs: to `end`, then (with --load-after-restart) until the
        first restarted replica has served that long; not waited for once a restart failed."""
        now, after = time.monotonic(), self.args.load_after_restart
        if now < end or not after or self.tally.failed_restarts:
            return end - now
        if self.back_at is None:
            return 0.5  # the restart is under way (bounded: a replica is killed after 60 s)
        return self.back_at + after - now

    async def run(self, log: Path) -> tuple[float, float, float]:
        retry = ganserve.RetryPolicy(max_attempts=40, max_backoff=2.0)
        addresses = [r.address for r in self.replicas]
        started = time.monotonic()
        async with ganserve.AsyncClient(addresses, timeout=120, retry=retry, seed=0) as sdk:
            clients = [asyncio.create_task(self.client(i, sdk)) for i in range(self.args.clients)]
            await asyncio.sleep(self.args.warmup)
            before = await self.quiet_rss()
            restarts = asyncio.create_task(self.restarter(log))
            end = started + self.args.minutes * 60
            while (left := self._load_left(end)) > 0:
                await asyncio.sleep(min(10, left))
                t = self.tally
                print(
                    f"  {time.monotonic() - started:5.0f} s: {t.valid} valid calls, lost "
                    f"{t.lost}, wrong {t.wrong}, internal {t.internal}, restarts {t.restarts}, "
                    f"RSS {self.replicas[0].rss_mb():.0f} MB",
                    flush=True,
                )
            after = await self.quiet_rss()
            self.stop.set()
            await restarts
            await asyncio.gather(*clients)
        return before, after, time.monotonic() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    p.add_argument("--restart-every", type=float, default=120.0, help="seconds between restarts")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument(
        "--load-after-restart",
        type=float,
        default=0.0,
        help="run past --minutes until the first restarted replica has served this long",
    )
    p.add_argument("--warmup", type=float, default=30.0, help="seconds before the first RSS")
    p.add_argument("--max-rss-growth", type=float, default=0.05, help="the RSS bar, as a fraction")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ganserve-soak-") as folder:
        log = Path(folder) / "replicas.log"
        replicas = [Replica(0, log), Replica(0, log)]
        try:
            with ganserve.Client(replicas[0].address, timeout=120) as client:
                refs = References(client, np.random.default_rng(0))
            soak = Soak(args, replicas, refs)
            before, after, seconds = asyncio.run(soak.run(log))
        finally:
            for replica in replicas:
                replica.stop()
            errors = [line for line in log.read_text().splitlines() if "ERROR" in line]
    t = soak.tally
    growth = after / before - 1
    print(
        f"{seconds:.0f} s, {args.clients} clients, 2 replicas, {t.restarts} restarts\n"
        f"valid calls {t.valid} (large translations {t.large}), lost {t.lost}, wrong bytes "
        f"{t.wrong}, INTERNAL/UNKNOWN {t.internal}\n"
        f"malformed {t.malformed}, cancelled streams {t.cancels}, tight deadlines {t.deadlines}\n"
        f"RSS of the replica never restarted: {before:.0f} MB after warm-up, {after:.0f} MB at "
        f"the end ({growth:+.1%})"
    )
    for what, n in t.failures.most_common(10):
        print(f"  {n} x {what}")
    for line in errors[:10]:
        print(f"  replica log: {line}")
    ok = (
        t.lost == t.wrong == t.internal == t.failed_restarts == 0
        and growth < args.max_rss_growth
        and t.valid
    )

    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
