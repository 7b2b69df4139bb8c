"""The protocol-free request layer: what a call asks for, checked once, and the work to run.

Both transports, `server.v1` (ganserve.v1) and `server.oip` (the Open Inference Protocol),
parse their wire messages into the plain values here (a `Generation`, a translation's source
pixels or PNGs) and hand them to `Core`, which checks them against the model, the server's
limits and the shared contracts (`ganserve.contract`), and runs them through the model's
batcher. So both protocols get the same validation, limits, determinism and batching; what is
left to a transport is its wire: field names, tensors, reply encoding. Failures are
`server.errors`; no code here chooses a status code.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ganserve.contract import (
    INDEX_SPACE,
    MASK_FILL,
    MAX_CHUNK_SIZE,
    balanced_labels,
    image_count,
    mask_problem,
)
from ganserve.export.metadata import ModelCard
from ganserve.latent import endpoint, latents, path_latents, truncation_problem
from ganserve.server.batcher import Queued
from ganserve.server.config import ServerConfig
from ganserve.server.errors import Draining, InvalidRequest, WrongKind
from ganserve.server.images import decode_pngs, mask_input, model_input
from ganserve.server.metrics import Metrics
from ganserve.server.models import Lease, ModelRepository, ModelVersion
from ganserve.server.runner import cpu_cores

STREAM_PREFETCH = 2  # chunks of a stream in flight at once: the next computes while one is sent
Feeds = dict[str, np.ndarray]
T = TypeVar("T")


@dataclass(slots=True)
class Path:
    """A path through the latent space (Interpolate): `steps` images from `start` to `end`,
    each end a seeded image `(seed, index)` or an explicit float32 [nz] latent; `method` is
    "spherical" or "linear" (`ganserve.latent.path_latents` defines the latents)."""

    start: tuple[int, int] | np.ndarray
    end: tuple[int, int] | np.ndarray
    steps: int
    method: str = "spherical"


@dataclass(slots=True)
class Generation:
    """Images asked of a generator (unconditional or conditional), in plain values.

    Images are `start_index` .. `start_index + n - 1` of `seed`, the rows of `latents`, or
    steps `start_index` .. `path.steps - 1` of `path`. A conditional model needs `condition`:
    "labels" (one per image), "label" (one for all) or "balanced" (image i shows class i mod
    C)."""

    seed: int = 0
    start_index: int = 0
    count: int = 0
    latents: np.ndarray | None = None
    path: Path | None = None
    truncation: float = 0.0
    condition: str | None = None
    labels: np.ndarray | None = None  # int64, for condition "labels"
    label: int = 0
    balanced: bool = False


@dataclass(slots=True)
class Plan:
    """A checked Generation: its model, its image count and (lo, n) → the generator's inputs
    for images lo .. lo + n - 1 of the call."""

    mv: ModelVersion
    count: int
    start_index: int
    inputs: Callable[[int, int], Feeds]


class Core:
    """The checks and the work of every call, over a loaded ModelRepository."""

    def __init__(self, repo: ModelRepository, config: ServerConfig, metrics: Metrics) -> None:
        self.repo, self.config, self.metrics = repo, config, metrics
        self.draining = False
        # CPU-heavy request work (PNG decoding and encoding) runs here, never on the event loop
        self.cpu_pool = ThreadPoolExecutor(cpu_cores(), thread_name_prefix="request-cpu")

    def drain(self) -> None:
        """Refuse every new call from now on (the server is shutting down)."""
        self.draining = True

    @property
    def ready(self) -> bool:
        """Taking calls: some model version is ready and the server is not draining."""
        return not self.draining and self.repo.any_ready

    def close(self) -> None:
        self.cpu_pool.shutdown(wait=True, cancel_futures=True)

    async def off_loop(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the request pool (CPU work of one call, off the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu_pool, fn, *args)

    # -- models -----------------------------------------------------------------------------

    def lease(self, name: str, version: int, field: str = "model") -> Lease:
        """`async with core.lease(...) as mv`: the model version a call uses, kept loaded
        until the call ends. `field` is the request field that names the model."""
        if self.draining:
            raise Draining("server is shutting down; retry elsewhere")
        if not name:
            raise InvalidRequest(f"{field}: required (the model list shows the names)")
        if version < 0:
            raise InvalidRequest(f"version: {version}; 0 (the latest) or a version number")
        return self.repo.lease(name, version)

    # -- limits -----------------------------------------------------------------------------

    def check_count(self, count: int, stream: bool, field: str = "count") -> None:
        limit = self.config.max_images_per_call
        if count < 1 or (not stream and count > limit):
            allowed = "at least 1" if stream else f"1 to {limit} (use the stream rpc for more)"
            raise InvalidRequest(f"{field}: {count}; must be {allowed}")

    def check_reply_size(self, card: ModelCard, n: int, h: int, w: int, itemsize: int) -> None:
        size = n * h * w * card.channels * itemsize
        if size > self.config.max_message_bytes - 4096:
            raise InvalidRequest(
                f"count: {n} images of {h}x{w}x{card.channels} make {size} bytes, "
                f"over the {self.config.max_message_bytes}-byte message limit"
            )

    def chunk_size(self, asked: int) -> int:
        """Images per streamed message: `asked`, or the server's default for 0."""
        chunk = asked or self.config.stream_chunk_size
        if not 1 <= chunk <= MAX_CHUNK_SIZE:
            raise InvalidRequest(f"chunk_size: {chunk}; 1 to {MAX_CHUNK_SIZE} (0: server default)")
        return chunk

    # -- generators -------------------------------------------------------------------------

    def plan(self, mv: ModelVersion, g: Generation, stream: bool) -> Plan:
        """Check `g` against `mv` and the limits; nothing is queued yet."""
        card = mv.card
        assert card is not None
        label_count = len(g.labels) if g.labels is not None else None
        latent_rows = (g.latents.shape[:1] or (0,))[0] if g.latents is not None else None
        if g.path is not None:
            self._check_path_label(mv, g)
            count, field = self._path_count(g.path, g.start_index), "steps"
        else:
            count, field = image_count(g.count, latent_rows, label_count)
        self.check_count(count, stream, field)
        if g.start_index + count > INDEX_SPACE:
            raise InvalidRequest(f"start_index: {g.start_index} + {count} images passes 2^64")
        z_of = self._latent_source(g, card)
        if card.kind != "conditional":
            return Plan(mv, count, g.start_index, lambda lo, n: {"z": z_of(lo, n)})
        label_of = self._label_source(g, card, count)
        return Plan(
            mv, count, g.start_index, lambda lo, n: {"z": z_of(lo, n), "label": label_of(lo, n)}
        )

    @staticmethod
    def _check_path_label(mv: ModelVersion, g: Generation) -> None:
        """A path shows one class on a conditional model, and none on an unconditional one."""
        card = mv.card
        assert card is not None
        if card.kind == "unconditional" and g.condition is not None:
            raise WrongKind(f"label: model {mv.name!r} is unconditional; it takes no label")
        if card.kind == "conditional" and g.condition is None:
            classes = f"0 to {card.num_classes - 1}"
            raise InvalidRequest(f"label: required by a conditional model ({classes})")

    @staticmethod
    def _path_count(path: Path, start: int) -> int:
        if path.steps < 2:
            raise InvalidRequest(f"steps: {path.steps}; at least 2 (both ends are images)")
        if start >= path.steps:
            raise InvalidRequest(f"start_index: {start}; a step of the path, 0 to {path.steps - 1}")
        return path.steps - start

    def _latent_source(self, g: Generation, card: ModelCard) -> Callable[[int, int], np.ndarray]:
        truncation = float(g.truncation)
        problem = truncation_problem(truncation)
        if problem:
            raise InvalidRequest(problem)
        if g.path is not None:
            return self._path_source(g.path, g.start_index, card.latent_size, truncation)
        if g.latents is not None:
            z = g.latents
            if z.dtype != np.float32 or z.ndim != 2 or z.shape[1] != card.latent_size:
                raise InvalidRequest(
                    f"latents: {z.dtype}{list(z.shape)}; must be float32 [N, {card.latent_size}]"
                )
            if not np.isfinite(z).all():
                raise InvalidRequest("latents: contains NaN or infinity")
            if truncation:
                z = np.clip(z, -truncation, truncation)
            return lambda lo, n: z[lo : lo + n]
        seed, start, nz = g.seed, g.start_index, card.latent_size
        return lambda lo, n: latents(seed, start + lo, n, nz, truncation=truncation)

    @staticmethod
    def _path_source(
        path: Path, start: int, nz: int, truncation: float
    ) -> Callable[[int, int], np.ndarray]:
        ends = []
        for field, point in (("start", path.start), ("end", path.end)):
            try:
                ends.append(endpoint(point, nz, truncation=truncation))
            except ValueError as exc:
                raise InvalidRequest(f"{field}.latent: {exc}") from None
        a, b, steps, method = ends[0], ends[1], path.steps, path.method
        return lambda lo, n: path_latents(a, b, steps, method, start + lo, n)

    def _label_source(
        self, g: Generation, card: ModelCard, count: int
    ) -> Callable[[int, int], np.ndarray]:
        which, c = g.condition, card.num_classes
        if which is None:
            raise InvalidRequest(
                "labels: give labels (one per image), label (one for all) or balanced"
            )
        if which == "balanced" and not g.balanced:
            raise InvalidRequest("balanced: false; set it true, or give labels or label instead")
        if which == "balanced":
            start = g.start_index
            return lambda lo, n: balanced_labels(start + lo, n, c)
        if which == "labels":
            assert g.labels is not None
            values = g.labels
            if len(values) != count:
                raise InvalidRequest(f"labels: {len(values)} labels for {count} images")
        else:
            values = np.asarray([g.label], np.int64)
        bad = values[(values < 0) | (values >= c)]
        if len(bad):
            raise InvalidRequest(
                f"{which}: label {bad[0]} out of range; 0 to {c - 1} ({card.class_names})"
            )
        if which == "labels":
            return lambda lo, n: values[lo : lo + n]
        label = g.label
        return lambda lo, n: np.full(n, label, np.int64)

    async def run(self, mv: ModelVersion, feeds: Feeds) -> np.ndarray:
        """The generator's output for `feeds`, through the version's batcher."""
        assert mv.batcher is not None
        return await mv.batcher.submit(feeds)

    async def stream(self, plan: Plan, chunk: int) -> AsyncIterator[tuple[int, Feeds, np.ndarray]]:
        """(first image's index in the call, inputs, output) per chunk of `plan`, in order.

        The next chunk is queued ahead (computing while the one before is sent) only into the
        room the batcher keeps for work queued ahead (has_room): it never crowds out a
        stream's or a call's own work, so a stream is refused only for a real overload."""
        batcher, total = plan.mv.batcher, plan.count
        assert batcher is not None
        pending: deque[tuple[int, Feeds, Queued, asyncio.Task]] = deque()
        lo = 0
        try:
            while lo < total or pending:
                while lo < total and len(pending) < STREAM_PREFETCH:
                    n, ahead = min(chunk, total - lo), bool(pending)
                    if ahead and not batcher.has_room(n, ahead=True):
                        break
                    feeds = plan.inputs(lo, n)
                    queued = batcher.enqueue(feeds, ahead=ahead)
                    task = asyncio.ensure_future(batcher.collect(queued))
                    pending.append((lo, feeds, queued, task))
                    lo += n
                start, feeds, _, task = pending.popleft()
                yield start, feeds, await task
        finally:
            for _, _, queued, task in pending:
                task.cancel()
                batcher.drop(queued)  # also if its task never started

    # -- translation ------------------------------------------------------------------------

    def check_sources(self, card: ModelCard, n: int, h: int, w: int) -> None:
        """Count, size and pixel budget of a translation call: checked before any decoding.
        The budget counts output pixels: a super-resolution model's are `scale`^2 per source
        pixel."""
        self.check_count(n, stream=False, field="images")
        m = card.size_multiple
        if h < m or w < m or h % m or w % m:
            raise InvalidRequest(f"images: {h}x{w}; height and width must be multiples of {m}")
        out_h, out_w = card.output_size(h, w)
        if n * out_h * out_w > self.config.max_translation_pixels:
            upscaled = f" (upscaled {card.scale}x: {out_h} x {out_w})" if card.scale > 1 else ""
            raise InvalidRequest(
                f"images: {n} x {h} x {w}{upscaled} = {n * out_h * out_w} pixels, over the limit "
                f"of {self.config.max_translation_pixels} per call"
            )

    def check_images(self, card: ModelCard, images: np.ndarray, field: str = "images") -> None:
        """Source pixels given as a tensor: uint8 [N, H, W, C] of the model's channels."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != card.channels:
            raise InvalidRequest(
                f"{field}: {images.dtype}{list(images.shape)}; must be uint8 "
                f"[N, H, W, {card.channels}]"
            )
        self.check_sources(card, *images.shape[:3])

    async def decode(self, card: ModelCard, pngs: list[bytes]) -> np.ndarray:
        """Source PNGs as uint8 [N, H, W, C]: sized from their headers and checked first, then
        decoded, on the request pool."""
        self.check_count(len(pngs), stream=False, field="images")
        check = functools.partial(self.check_sources, card)
        return await self.off_loop(decode_pngs, pngs, card.channels, check)

    async def translation_feeds(
        self,
        mv: ModelVersion,
        images: np.ndarray,
        mask: np.ndarray | None = None,
        mask_pngs: list[bytes] | None = None,
    ) -> Feeds:
        """The graph's inputs for checked source `images`: the image, and for an inpainting
        model its mask (a tensor, or PNGs decoded on the request pool), checked against the
        images: uint8 [N, H, W] or [N, H, W, 1], values 0 (keep) and 255 (fill), or 0 and 1."""
        card = mv.card
        assert card is not None
        feeds = {"image": model_input(card, images)}
        given = mask is not None or bool(mask_pngs)
        if not card.takes_mask:
            if given:
                raise InvalidRequest(f"mask: model {mv.name!r} fills no holes; send images alone")
            return feeds
        if mask is not None and mask_pngs:
            raise InvalidRequest("mask, mask_png: give at most one of them")
        n, h, w, _ = images.shape
        if not given:
            raise InvalidRequest(
                f"mask: required by an inpainting model: uint8 [{n}, {h}, {w}], {MASK_FILL} = fill"
            )
        if mask_pngs:

            def check(count: int, mh: int, mw: int) -> None:
                if (count, mh, mw) != (n, h, w):
                    raise InvalidRequest(
                        f"mask_png: {count} of {mh}x{mw}; one per image, {h}x{w} as the images"
                    )

            mask = await self.off_loop(decode_pngs, mask_pngs, 1, check, "mask_png")
            field = "mask_png"
        else:
            field = "mask"
        assert mask is not None
        given_shape = list(mask.shape)
        if mask.ndim == 3:
            mask = mask[..., None]
        if mask.dtype != np.uint8 or mask.shape != (n, h, w, 1):
            raise InvalidRequest(
                f"{field}: {mask.dtype}{given_shape}; must be uint8 [{n}, {h}, {w}] "
                f"(or [{n}, {h}, {w}, 1]), one per image"
            )
        problem = mask_problem(mask)
        if problem:
            raise InvalidRequest(f"{field}: {problem}")
        feeds["mask"] = mask_input(card, mask)
        return feeds
