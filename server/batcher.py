"""The dynamic batcher: one per model version, event-driven, with bounded queues.

Requests are cut into pieces of at most `max_batch_size` images and queued. A batch starts
with the oldest live piece and takes every queued piece of the same shape that still fits; it is
flushed when full, or `max_queue_delay` after its first piece arrived. The run happens on the
model's own thread (ONNX Runtime releases the GIL), and the output is scattered back to each
piece's future. A cancelled call's futures are cancelled, and its queued pieces are dropped
without running. Each image's output depends on its inputs alone, so coalescing never changes
the bytes a caller gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from server.metrics import Metrics


class QueueFull(Exception):
    """The model's queue holds max_queue_size images already."""


@dataclass
class _Piece:
    feeds: dict[str, np.ndarray]
    size: int
    key: tuple  # input shapes past the batch axis: only equal keys share a batch
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Coalesces concurrent requests for one model into batches for `run`."""

    def __init__(
        self,
        name: str,
        run: Callable[[dict[str, np.ndarray]], np.ndarray],
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        metrics: Metrics,
    ) -> None:
        self.name = name
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        # this model's series, resolved once rather than per request
        self._depth = metrics.queue_depth.labels(name)
        self._wait = metrics.queue_wait.labels(name)
        self._compute = metrics.compute_latency.labels(name)
        self._sizes = metrics.batch_size.labels(name)
        self._queue: deque[_Piece] = deque()
        self._queued_images = 0  # submitted, not yet running: the queue and a filling batch
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"run-{name}")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batch-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for piece in self._queue:
            piece.future.cancel()
        self._queue.clear()
        self._executor.shutdown(wait=True)

    async def submit(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run `feeds` (arrays with one batch axis) and return the output, in order."""
        n = len(next(iter(feeds.values())))
        if self._queued_images + n > self.max_queue_size:
            raise QueueFull(
                f"model {self.name}: {self._queued_images} images queued, room for "
                f"{self.max_queue_size - self._queued_images}; retry later"
            )
        loop = asyncio.get_running_loop()
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in feeds.items())
        pieces = []
        for lo in range(0, n, self.max_batch_size):
            part = {k: v[lo : lo + self.max_batch_size] for k, v in feeds.items()}
            pieces.append(_Piece(part, min(self.max_batch_size, n - lo), key, loop.create_future()))
        self._queue.extend(pieces)
        self._queued_images += n
        self._depth.set(self._queued_images)
        self._arrived.set()
        try:
            if len(pieces) == 1:
                return await pieces[0].future
            outputs = await asyncio.gather(*(p.future for p in pieces))
        except BaseException:
            for p in pieces:  # a cancelled or failed call: drop what has not run yet
                p.future.cancel()
            raise
        return np.concatenate(outputs)

    def _take(self, first: _Piece | None, room: int) -> list[_Piece]:
        """Queued live pieces that share the batch's shape and fit in `room` images."""
        taken, kept = [], deque()
        while self._queue:
            piece = self._queue.popleft()
            if piece.future.done():  # cancelled while queued: never runs
                self._queued_images -= piece.size
                continue
            if first is None:
                first = piece
            if piece.key == first.key and piece.size <= room:
                taken.append(piece)  # still counted as queued until its batch runs
                room -= piece.size
            else:
                kept.append(piece)
        self._queue = kept
        return taken

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._take(None, self.max_batch_size)
            if not batch:
                self._depth.set(self._queued_images)
                self._arrived.clear()
                await self._arrived.wait()
                continue
            size = sum(p.size for p in batch)
            flush_at = batch[0].enqueued + self.max_queue_delay_s
            while size < self.max_batch_size:
                wait = flush_at - time.perf_counter()
                if wait <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), wait)
                more = self._take(batch[0], self.max_batch_size - size)
                batch += more
                size += sum(p.size for p in more)
            live = [p for p in batch if not p.future.done()]
            self._queued_images -= sum(p.size for p in batch)  # running now, or dropped
            self._depth.set(self._queued_images)
            if live:
                await self._execute(loop, live)

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Piece]) -> None:
        started = time.perf_counter()
        for piece in batch:
            self._wait.observe(started - piece.enqueued)
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {k: np.concatenate([p.feeds[k] for p in batch]) for k in batch[0].feeds}
        size = sum(p.size for p in batch)
        try:
            output = await loop.run_in_executor(self._executor, self._run, feeds)
        except Exception as exc:  # the whole batch failed: every caller hears why
            for piece in batch:
                if not piece.future.done():
                    piece.future.set_exception(exc)
            return
        self._compute.observe(time.perf_counter() - started)
        self._sizes.observe(size)
        lo = 0
        for piece in batch:
            if not piece.future.done():
                piece.future.set_result(output[lo : lo + piece.size])
            lo += piece.size
