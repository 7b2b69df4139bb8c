"""The dynamic batcher: one per model version, event-driven, over N execution instances.

Requests are cut into pieces of at most `max_batch_size` images and queued. Each execution
instance (an ONNX Runtime session with a thread of its own) has a worker: an idle worker is
woken by the next arrival and takes at once the oldest live piece and every queued piece of the
same shape that still fits, so a lone request never waits (Triton's semantics). Batches grow by
themselves while every instance is busy; `max_queue_delay` only adds a wait for a batch whose
first piece arrived while every instance was busy (the server is loaded), and then at most that
long after its arrival. Batches overlap across instances; the concatenation, the run and the
slicing happen on the instance's thread (ONNX Runtime releases the GIL), and each piece's output
goes back to its future; a batch of a size that has been running in under `inline_run` runs on
the event loop instead, as handing it to a thread and back costs more (measured: 0.1-0.25 ms on
2 cores), and a lone call that finds nothing queued and an instance idle runs at once in the
rpc's own step, never touching the queue.
On the CPU a version may also have a solo session with every core's threads: a batch that
starts while no other batch runs goes there, so a lone call gets the whole machine.
A cancelled call's futures are cancelled, and its queued pieces are dropped without running.
Each image's output depends on its inputs alone, so coalescing and the
choice of instance never change the bytes a caller gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from ganserve.server.errors import QueueFull
from ganserve.server.metrics import Metrics
from ganserve.server.tracing import Call, current

Run = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class _Piece:
    feeds: dict[str, np.ndarray]
    size: int
    key: tuple  # input shapes past the batch axis: only equal keys share a batch
    future: asyncio.Future[np.ndarray]
    loaded: bool  # every instance was busy when it arrived: its batch may wait to fill
    values: int  # input values (the largest input's), for the batch's memory budget
    enqueued: float = field(default_factory=time.perf_counter)
    counted: bool = True  # in the queue's image count (until it runs or is dropped)
    ahead: bool = False  # a stream's chunk queued before its reader needs it (see has_room)
    trace: Call | None = None  # the traced rpc it belongs to (server.tracing)
    enqueued_ns: int = 0  # its arrival in wall-clock ns, for its `queue` span (when traced)


def _settle(future: asyncio.Future[np.ndarray], output: Any, error: BaseException | None) -> None:
    if future.done():  # the worker was cancelled (close) while the run was in flight
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(output)


Queued: TypeAlias = (
    "list[_Piece] | np.ndarray"  # what enqueue took: queued pieces, or the output itself
)


class _Instance:
    """One execution instance: a thread that runs batches handed over from the event loop, or
    the loop itself for a batch cheap enough that the hand-over would cost more than the run.

    The thread is leaner than a ThreadPoolExecutor (no concurrent Future, no Condition, one
    call back into the loop). Each run's own duration is kept per batch-size bucket (powers of
    two), as a moving average over the last few runs, which is what `cheap` judges by.
    """

    def __init__(self, name: str, run: Run) -> None:
        self.name = name
        self.run = run
        self.seconds: dict[int, float] = {}  # batch size bucket -> moving average of runs
        self._jobs: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def cheap(self, size: int, limit_s: float) -> bool:
        """Whether batches of about `size` have been running in under `limit_s` here."""
        return self.seconds.get(size.bit_length(), limit_s) < limit_s

    def run_now(self, batch: list[dict[str, np.ndarray]], size: int) -> np.ndarray:
        """Concatenate the pieces' inputs (`size` images in all) and run them here."""
        started = time.perf_counter()
        if len(batch) == 1:
            output = self.run(batch[0])
        else:
            output = self.run({k: np.concatenate([f[k] for f in batch]) for k in batch[0]})
        took = time.perf_counter() - started
        bucket = size.bit_length()
        self.seconds[bucket] = 0.8 * self.seconds.get(bucket, took) + 0.2 * took
        return output

    def submit(self, batch: list[dict[str, np.ndarray]], size: int) -> asyncio.Future[np.ndarray]:
        """Run on the instance's thread (ONNX Runtime releases the GIL); awaitable result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, batch, size))
        return future

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, batch, size = job
            try:
                output = self.run_now(batch, size)
            except Exception as exc:  # the batch's callers hear why; the thread serves on
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, output, None)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


class Batcher:
    """Coalesces concurrent requests for one model into batches for its instances' `runs`."""

    def __init__(
        self,
        name: str,
        runs: Sequence[Run],
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        metrics: Metrics,
        inline_run_s: float = 0.0,
        solo: Run | None = None,
        max_batch_values: int = 0,
    ) -> None:
        if not runs:
            raise ValueError(f"model {name}: a batcher needs at least one instance")
        self.name = name
        self._instances = [_Instance(f"run-{name}-{i}", run) for i, run in enumerate(runs)]
        # a session with every core's threads, for a batch that runs while no other does
        self._solo = _Instance(f"run-{name}-solo", solo) if solo is not None else None
        self._running = 0  # batches in ONNX Runtime right now
        self.runs = 0  # batches run so far (the idle heap trim looks for new ones)
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.inline_run_s = inline_run_s
        # input values one batch may hold (0: no limit): translation calls of many pixels must
        # not coalesce into one run of many times the per-call limit
        self.max_batch_values = max_batch_values
        # this model's series, resolved once rather than per request
        self._depth = metrics.queue_depth.labels(name)
        self._busy_gauge = metrics.busy_instances.labels(name)
        self._wait = metrics.queue_wait.labels(name)
        self._compute = metrics.compute_latency.labels(name)
        self._sizes = metrics.batch_size.labels(name)
        self._queue: deque[_Piece] = deque()
        self._queued_images = 0  # submitted, not yet running: the queue and filling batches
        self._ahead_images = 0  # of those, queued ahead by streams (see has_room)
        # one (waiter, instance) per worker waiting for work; a done waiter has been woken
        self._idle: deque[tuple[asyncio.Future[None], _Instance]] = deque()
        self._woken = 0  # idle workers handed new work that have not taken it yet
        self._busy = 0  # workers holding a batch (filling or running)
        self._fillers: list[asyncio.Future[None]] = []  # filling batches waiting for arrivals
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def idle(self) -> bool:
        """Nothing running, nothing queued."""
        return not self._running and not self._queued_images

    @property
    def instances(self) -> int:
        return len(self._instances)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._worker(instance), name=f"batch-{self.name}-{i}")
            for i, instance in enumerate(self._instances)
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for piece in self._queue:
            piece.future.cancel()
        self._queue.clear()
        for instance in self._instances:
            instance.close()
        if self._solo is not None:
            self._solo.close()

    def has_room(self, images: int, ahead: bool = False) -> bool:
        """Whether the queue would take `images` more now. Work a caller waits for has the
        whole queue, less what it holds already; work queued ahead of need (a stream's next
        chunk) only the room below half of it, and is not counted against the other. So work
        queued ahead never crowds out a call's or a stream's own work: the queue refuses only
        when that alone passes the limit, and holds at most 1.5x the limit in all."""
        if ahead:
            return self._queued_images + images <= self.max_queue_size // 2
        return self._queued_images - self._ahead_images + images <= self.max_queue_size

    async def submit(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run `feeds` (arrays with one batch axis) and return the output, in order."""
        return await self.collect(self.enqueue(feeds))

    def enqueue(self, feeds: dict[str, np.ndarray], ahead: bool = False) -> Queued:
        """Queue `feeds` now (QueueFull if there is no room: see has_room), or run them at once
        when that is cheap; `collect` waits for the output. Work that is never collected must
        be dropped."""
        n = len(next(iter(feeds.values())))
        if not self.has_room(n, ahead):
            waiting = self._queued_images - self._ahead_images
            raise QueueFull(
                f"model {self.name}: {waiting} images queued, room for "
                f"{self.max_queue_size - waiting}; retry later"
            )
        if n <= self.max_batch_size and not self._queue:
            instance = self._idle_instance()
            if instance is not None:
                instance = self._where(instance)
                if instance.cheap(n, self.inline_run_s):
                    return self._run_at_once(instance, feeds, n)
        loop = asyncio.get_running_loop()
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in feeds.items())
        loaded = self._busy >= len(self._instances)
        per_image = max(v[0].size for v in feeds.values()) if n else 0
        pieces = []
        call = current()
        for lo in range(0, n, self.max_batch_size):
            part = {k: v[lo : lo + self.max_batch_size] for k, v in feeds.items()}
            size = min(self.max_batch_size, n - lo)
            values = size * per_image
            pieces.append(_Piece(part, size, key, loop.create_future(), loaded, values))
            pieces[-1].ahead = ahead
            if call is not None:
                pieces[-1].trace, pieces[-1].enqueued_ns = call, time.time_ns()
        self._queue.extend(pieces)
        self._queued_images += n
        self._ahead_images += n if ahead else 0
        self._depth.set(self._queued_images)
        self._wake(len(pieces))
        return pieces

    async def collect(self, queued: Queued) -> np.ndarray:
        """The output of work `enqueue` took; if this is cancelled or fails, what has not run
        yet is dropped."""
        if isinstance(queued, np.ndarray):
            return queued
        try:
            if len(queued) == 1:
                return await queued[0].future
            outputs = await asyncio.gather(*(p.future for p in queued))
        except BaseException:
            self.drop(queued)
            raise
        return np.concatenate(outputs)

    def drop(self, queued: Queued) -> None:
        """Drop what has not run of `queued`, and give its room in the queue back at once."""
        if isinstance(queued, np.ndarray):
            return
        for p in queued:
            p.future.cancel()
            self._uncount(p)
        self._depth.set(self._queued_images)

    def _uncount(self, piece: _Piece) -> None:
        """Take `piece` out of the queued-image count, once."""
        if piece.counted:
            piece.counted = False
            self._queued_images -= piece.size
            self._ahead_images -= piece.size if piece.ahead else 0

    def _idle_instance(self) -> _Instance | None:
        """An instance whose worker waits for work and has not been handed any."""
        for waiter, instance in self._idle:
            if not waiter.done():
                return instance
        return None

    def _where(self, instance: _Instance) -> _Instance:
        """The solo session when nothing else runs (a lone call gets every core), else
        `instance`, whose single thread leaves the other cores to the other instances."""
        return self._solo if self._solo is not None and not self._running else instance

    def _run_at_once(self, instance: _Instance, feeds: dict[str, np.ndarray], n: int) -> np.ndarray:
        """The fast path: nothing queued, an idle instance, a cheap run. It runs on the loop
        before anything else can, so the instance stays free for its worker afterwards."""
        started = time.perf_counter()
        self._wait.observe(0.0)
        self.runs += 1
        call = current()
        span = self._batch_span([call], n, 1, instance, True) if call is not None else None
        try:
            output = instance.run_now([feeds], n)
        finally:
            if span is not None:
                span.end()
        self._compute.observe(time.perf_counter() - started)
        self._sizes.observe(n)
        return output

    def _batch_span(
        self, calls: list[Call], size: int, pieces: int, instance: _Instance, inline: bool
    ) -> Any:
        """The started `batch` span of a batch of `size` images in `pieces` pieces serving the
        traced `calls` (server.tracing): under the first unary call, linked to each; None when
        only streams are traced."""
        sampled = list({id(c): c for c in calls if c.sampled}.values())
        parent = next((c for c in sampled if not c.stream), None)
        if parent is None:
            return None
        return parent.tracing.batch_span(
            parent,
            sampled,
            **{
                "ganserve.model": self.name,
                "ganserve.batch.size": size,
                "ganserve.batch.pieces": pieces,
                "ganserve.instance": instance.name,
                "ganserve.inline": inline,
            },
        )

    def _wake(self, pieces: int) -> None:
        """Hand new work to up to `pieces` idle workers, and tell filling batches it came."""
        for filler in self._fillers:
            if not filler.done():
                filler.set_result(None)
        self._fillers.clear()
        while pieces and self._idle:
            waiter, _ = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                pieces -= 1

    def _take(self, first: _Piece | None, room: int, budget: float | None = None) -> list[_Piece]:
        """Queued live pieces that share the batch's shape and fit in `room` images and in
        `budget` input values (a new batch's first piece always goes: a piece never exceeds a
        batch, and one call never exceeds the budget)."""
        if budget is None:
            budget = self.max_batch_values or float("inf")
        taken, kept = [], deque()
        while self._queue:
            piece = self._queue.popleft()
            if piece.future.done():  # cancelled while queued: never runs
                self._uncount(piece)
                continue
            if first is None:
                first = piece
                room = max(room, piece.size)
                budget = max(budget, piece.values)
            if room and piece.key == first.key and piece.size <= room and piece.values <= budget:
                taken.append(piece)  # still counted as queued until its batch runs
                room -= piece.size
                budget -= piece.values
            else:
                kept.append(piece)
        self._queue = kept
        return taken

    async def _fill(self, batch: list[_Piece]) -> None:
        """Under load, let `batch` grow until full or `max_queue_delay` after its first piece."""
        loop = asyncio.get_running_loop()
        size = sum(p.size for p in batch)
        flush_at = batch[0].enqueued + self.max_queue_delay_s
        while size < self.max_batch_size:
            wait = flush_at - time.perf_counter()
            if wait <= 0:
                return
            arrival = loop.create_future()
            self._fillers.append(arrival)
            timer = loop.call_later(wait, _settle, arrival, None, None)
            try:
                await arrival  # the next arrival, or the flush time
            finally:
                timer.cancel()
            budget = (self.max_batch_values or float("inf")) - sum(p.values for p in batch)
            more = self._take(batch[0], self.max_batch_size - size, budget)
            batch += more
            size += sum(p.size for p in more)

    async def _worker(self, instance: _Instance) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Idle instances that were just handed work share the queue with this one, so two
            # lone calls run side by side rather than as one batch on one instance.
            share = -(-self._queued_images // (1 + self._woken))
            batch = self._take(None, min(self.max_batch_size, share))
            if not batch:
                self._depth.set(self._queued_images)
                waiter = loop.create_future()
                self._idle.append((waiter, instance))
                await waiter
                self._woken -= 1
                continue
            self._busy += 1
            self._busy_gauge.set(self._busy)
            try:
                if batch[0].loaded and self.max_queue_delay_s > 0:
                    await self._fill(batch)
                live = [p for p in batch if not p.future.done()]
                for piece in batch:  # running now, or dropped
                    self._uncount(piece)
                self._depth.set(self._queued_images)
                if live:
                    await self._execute(instance, live)
            finally:
                self._busy -= 1
                self._busy_gauge.set(self._busy)

    async def _execute(self, instance: _Instance, batch: list[_Piece]) -> None:
        started = time.perf_counter()
        for piece in batch:
            self._wait.observe(started - piece.enqueued)
        size = sum(p.size for p in batch)
        feeds = [p.feeds for p in batch]
        instance = self._where(instance)
        inline = instance.cheap(size, self.inline_run_s)  # a thread hand-over would cost more
        span = self._traced(batch, size, instance, inline)
        self._running += 1
        self.runs += 1
        try:
            if inline:
                output = instance.run_now(feeds, size)
            else:
                output = await instance.submit(feeds, size)
        except Exception as exc:  # the whole batch failed: every caller hears why
            for piece in batch:
                if not piece.future.done():
                    piece.future.set_exception(exc)
            if span is not None:
                span.record_exception(exc)
            return
        finally:
            self._running -= 1
            if span is not None:
                span.end()
        self._compute.observe(time.perf_counter() - started)
        self._sizes.observe(size)
        lo = 0
        for piece in batch:
            if not piece.future.done():
                piece.future.set_result(output[lo : lo + piece.size])
            lo += piece.size

    def _traced(self, batch: list[_Piece], size: int, instance: _Instance, inline: bool) -> Any:
        """For a batch holding traced pieces: each one's `queue` span, and the batch's span."""
        calls = [p.trace for p in batch if p.trace is not None]
        if not calls:
            return None
        now = time.time_ns()
        for p in batch:
            if p.trace is not None:
                p.trace.add_span("queue", p.enqueued_ns, now, **{"ganserve.images": p.size})
        return self._batch_span(calls, size, len(batch), instance, inline)
