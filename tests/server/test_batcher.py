"""The batcher on its own: dispatch to idle instances, filling under load, limits, cancellation.

The runs here are plain functions on the instances' threads (the batcher takes any callable), so
a test can hold an instance busy for exactly as long as it needs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from ganserve.server.batcher import Batcher, QueueFull
from ganserve.server.metrics import Metrics


class Instance:
    """A run that doubles `z`, records each batch's rows, and can be held until released."""

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.batches: list[list[float]] = []
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.barrier = barrier

    def hold(self) -> None:
        self.gate.clear()
        self.entered.clear()

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.entered.set()
        if self.barrier is not None:
            self.barrier.wait()  # raises BrokenBarrierError if the other run never comes
        assert self.gate.wait(10), "held for more than 10 s"
        self.batches.append(feeds["z"][:, 0].tolist())
        self.threads.append(threading.current_thread().name)
        if (feeds["z"] < 0).any():
            raise RuntimeError("negative input")
        return feeds["z"] * 2


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def z(*values: float) -> dict[str, np.ndarray]:
    return {"z": np.asarray(values, np.float32).reshape(-1, 1)}


def batcher(runs: list[Instance], **settings: Any) -> Batcher:
    knobs: dict[str, Any] = {"max_batch_size": 8, "max_queue_delay_s": 0.0, "max_queue_size": 64}
    knobs.update(settings)
    b = Batcher("m:1", runs, metrics=Metrics(), **knobs)
    b.start()
    return b


async def until(event: threading.Event) -> None:
    deadline = time.monotonic() + 10
    while not event.is_set():
        assert time.monotonic() < deadline, "the instance never started a run"
        await asyncio.sleep(0.001)


async def occupy(b: Batcher, instance: Instance) -> asyncio.Future:
    """Hold `instance` inside a run of `z(0)`; the returned call ends once it is released."""
    instance.hold()
    running = asyncio.ensure_future(b.submit(z(0)))
    await until(instance.entered)
    return running


def test_each_call_gets_its_own_rows_however_it_is_cut_and_coalesced() -> None:
    async def go() -> list[np.ndarray]:
        b = batcher([Instance(), Instance()], max_batch_size=4)
        try:
            return await asyncio.gather(
                *(b.submit(z(*range(i, i + n))) for i, n in [(0, 3), (10, 9), (30, 1)])
            )
        finally:
            await b.close()

    small, large, single = run(go())
    assert small[:, 0].tolist() == [0, 2, 4]
    assert large[:, 0].tolist() == [2 * v for v in range(10, 19)]  # 3 pieces of at most 4
    assert single[:, 0].tolist() == [60]


def test_batches_overlap_on_two_instances() -> None:
    barrier = threading.Barrier(2, timeout=5)  # a run waits here until the other one starts

    async def go() -> None:
        b = batcher([Instance(barrier), Instance(barrier)])
        try:
            first, second = await asyncio.gather(b.submit(z(1)), b.submit(z(2)))
            assert (first[0, 0], second[0, 0]) == (2, 4)
        finally:
            await b.close()

    run(go())  # one instance at a time would break the barrier


def test_a_call_on_an_idle_instance_runs_at_once_whatever_the_delay() -> None:
    async def go() -> float:
        b = batcher([Instance()], max_queue_delay_s=10.0)
        try:
            started = time.perf_counter()
            await b.submit(z(1))
            return time.perf_counter() - started
        finally:
            await b.close()

    assert run(go()) < 5


def test_while_every_instance_is_busy_the_next_batch_fills_within_the_delay() -> None:
    instance = Instance()

    async def go() -> None:
        b = batcher([instance], max_batch_size=8, max_queue_delay_s=2.0)
        try:
            first = await occupy(b, instance)
            waiting = [asyncio.ensure_future(b.submit(z(i))) for i in range(1, 6)]
            await asyncio.sleep(0.05)
            instance.gate.set()  # the 5 queued images start a batch that may wait to fill
            await asyncio.sleep(0.2)
            late = [asyncio.ensure_future(b.submit(z(i))) for i in range(6, 9)]
            await asyncio.gather(first, *waiting, *late)
        finally:
            await b.close()

    run(go())
    assert instance.batches == [[0], [1, 2, 3, 4, 5, 6, 7, 8]]


def test_without_a_delay_a_freed_instance_takes_what_is_queued() -> None:
    instance = Instance()

    async def go() -> None:
        b = batcher([instance], max_batch_size=8)
        try:
            first = await occupy(b, instance)
            waiting = [asyncio.ensure_future(b.submit(z(i))) for i in range(1, 4)]
            await asyncio.sleep(0.05)
            instance.gate.set()
            await asyncio.gather(first, *waiting)
        finally:
            await b.close()

    run(go())
    assert instance.batches == [[0], [1, 2, 3]]


def test_the_queue_limit_counts_waiting_images_and_refuses_beyond_it() -> None:
    instance = Instance()

    async def go() -> None:
        b = batcher([instance], max_queue_size=8)
        try:
            running = await occupy(b, instance)  # running: not in the queue
            queued = asyncio.ensure_future(b.submit(z(*range(1, 7))))
            await asyncio.sleep(0)
            with pytest.raises(QueueFull, match="6 images queued, room for 2"):
                await b.submit(z(7, 8, 9))
            instance.gate.set()
            assert (await queued)[:, 0].tolist() == [2, 4, 6, 8, 10, 12]
            await running
        finally:
            await b.close()

    run(go())


def test_a_cancelled_call_is_dropped_from_the_queue_without_running() -> None:
    instance = Instance()

    async def go() -> None:
        b = batcher([instance])
        try:
            running = await occupy(b, instance)
            doomed = asyncio.ensure_future(b.submit(z(99)))
            kept = asyncio.ensure_future(b.submit(z(1)))
            await asyncio.sleep(0)
            doomed.cancel()
            instance.gate.set()
            await asyncio.gather(running, kept)
            assert doomed.cancelled()
        finally:
            await b.close()

    run(go())
    assert instance.batches == [[0], [1]]


def test_a_cancelled_call_gives_its_room_in_the_queue_back_at_once() -> None:
    instance = Instance()

    async def go() -> None:
        b = batcher([instance], max_queue_size=8)
        try:
            running = await occupy(b, instance)
            doomed = asyncio.ensure_future(b.submit(z(*range(8))))
            await asyncio.sleep(0)
            doomed.cancel()
            await asyncio.sleep(0)
            # its pieces still sit in the queue, dead; the room is the live calls'
            kept = asyncio.ensure_future(b.submit(z(*range(1, 9))))
            await asyncio.sleep(0)
            instance.gate.set()
            assert (await kept)[:, 0].tolist() == [2 * v for v in range(1, 9)]
            await running
        finally:
            await b.close()

    run(go())


def test_a_failed_batch_fails_its_callers_and_the_batcher_serves_on() -> None:
    async def go() -> None:
        b = batcher([Instance()])
        try:
            with pytest.raises(RuntimeError, match="negative input"):
                await b.submit(z(-1))
            assert (await b.submit(z(3)))[0, 0] == 6
        finally:
            await b.close()

    run(go())


@pytest.mark.parametrize("inline_run_s", [0.0, 10.0])
def test_a_cheap_run_skips_the_thread_hand_over_only_once_it_is_known_to_be_cheap(
    inline_run_s: float,
) -> None:
    instance = Instance()

    async def go() -> None:
        b = batcher([instance], inline_run_s=inline_run_s)
        try:
            for i in range(3):  # one at a time: an idle instance and nothing queued
                assert (await b.submit(z(i)))[0, 0] == 2 * i
        finally:
            await b.close()

    run(go())
    loop_thread = threading.current_thread().name
    if inline_run_s:  # the first run measures the cost, on the instance's thread
        assert instance.threads[0] != loop_thread
        assert instance.threads[1:] == [loop_thread, loop_thread]
    else:
        assert loop_thread not in instance.threads


def test_the_solo_session_takes_a_batch_only_while_no_other_runs() -> None:
    solo, a, b = Instance(), Instance(), Instance()

    async def go() -> None:
        bat = Batcher(
            "m:1",
            [a, b],
            max_batch_size=8,
            max_queue_delay_s=0.0,
            max_queue_size=64,
            metrics=Metrics(),
            solo=solo,
        )
        bat.start()
        try:
            assert (await bat.submit(z(5)))[0, 0] == 10  # alone: the solo session
            first = await occupy(bat, solo)
            assert (await bat.submit(z(1)))[0, 0] == 2  # the solo session is busy: an instance
            solo.gate.set()
            await first
        finally:
            await bat.close()

    run(go())
    assert solo.batches == [[5], [0]]
    assert a.batches + b.batches == [[1]]


def test_a_batch_stays_within_its_budget_of_input_values() -> None:
    instance = Instance()

    async def go() -> None:
        b = batcher([instance], max_batch_values=8)  # two calls of 4 values per batch
        try:
            first = await occupy(b, instance)
            rows = [np.full((1, 4), i, np.float32) for i in (1, 2, 3)]
            waiting = [asyncio.ensure_future(b.submit({"z": r})) for r in rows]
            await asyncio.sleep(0.05)
            instance.gate.set()
            await asyncio.gather(first, *waiting)
        finally:
            await b.close()

    run(go())
    assert instance.batches == [[0], [1, 2], [3]]


def test_work_queued_ahead_takes_half_the_queue_and_none_of_the_others_room() -> None:
    instance = Instance()

    async def go() -> None:
        b = batcher([instance], max_queue_size=8)
        try:
            running = await occupy(b, instance)
            ahead = b.enqueue(z(*range(4)), ahead=True)  # up to half the queue
            assert not b.has_room(1, ahead=True)
            with pytest.raises(QueueFull):
                b.enqueue(z(9), ahead=True)
            waited = asyncio.ensure_future(b.submit(z(*range(10, 18))))  # the whole queue
            await asyncio.sleep(0)
            with pytest.raises(QueueFull, match="8 images queued, room for 0"):
                await b.submit(z(99))
            instance.gate.set()
            assert (await b.collect(ahead))[:, 0].tolist() == [0, 2, 4, 6]
            assert len(await waited) == 8
            await running
        finally:
            await b.close()

    run(go())
