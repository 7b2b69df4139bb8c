"""Generated images streamed from the service into a PyTorch training loop.

    from torch.utils.data import DataLoader
    from ganserve.data import SyntheticDataset

    digits = SyntheticDataset("localhost:8500", "mnist-cgan", per_class=1000, seed=7)
    for images, labels in DataLoader(digits, batch_size=256, num_workers=2):
        ...  # images uint8 [256, 1, 32, 32], labels int64 [256]

Needs torch (`pip install 'ganserve[data]'`); `import ganserve` never imports this module, so the
SDK stays torch-free. The rules, numbered so the tests and the docs can point at them:

1. The dataset is the images of indices `start_index` .. `start_index + count - 1` under `seed`
   (and `truncation`, the latent contract's threshold, 0 for none) of one model version
   (`per_class` n of a conditional model: count = n x classes). Item i is `(image, label)`:
   what a bulk job of that seed and truncation writes at index i, byte for byte (the same
   streams with the same balanced labels: `ganserve.contract.balanced_labels`, class i mod C),
   as a uint8 tensor [C, H, W] (or `transform(image)`), and the label; -1 for an unconditional
   model.
2. The version is pinned: version 0 (the latest) is resolved once, when the dataset is made, so
   every worker and every epoch reads the same one.
3. Partition. The range is cut into blocks of `block_size` indices (the bulk job's shard
   arithmetic, `ganserve.bulk.layout`): block b is indices start + b*B .. start + (b+1)*B - 1,
   the last one short. Rank r of R takes the blocks with b mod R == r; worker w of the rank's W
   DataLoader workers takes the rank's k-th block when k mod W == w. So block b goes to rank
   b mod R, worker (b // R) mod W: parts are disjoint, their union is the range, a rank's share
   does not depend on its number of workers, and with one rank and `batch_size == block_size`
   a DataLoader yields the batches in index order. Each part reads its blocks in order, one
   stream per block (resumed after its last image if it breaks, as the SDK's streams are).
   R and W come from `torch.distributed` (when initialised) and `get_worker_info()`, unless
   `rank` and `world_size` are given.
4. State (torchdata's `Stateful`): `state_dict()` says how many items each part has served in
   the current pass, keyed "worker/workers"; `load_state_dict()` makes the next pass of each
   of those parts start after its last served item. `StatefulDataLoader` calls both inside
   each worker, so its checkpoints resume exactly; so does a dataset iterated in the main
   process. A loaded state applies to one pass; the pass after starts from the beginning (the
   same images again: the dataset is fixed, like a bulk job's).

`mix` interleaves a real dataset with generated samples at a given ratio, deterministically.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

try:
    import torch
    import torch.distributed
    from torch.utils.data import Dataset, IterableDataset, get_worker_info
except ImportError as exc:  # the SDK alone: say what to install
    raise ImportError("ganserve.data needs torch: pip install 'ganserve[data]'") from exc

from ganserve.bulk.jobs import JOB_RETRY
from ganserve.bulk.layout import shard_count, shard_span
from ganserve.client import Client
from ganserve.contract import INDEX_SPACE, SEEDS, balanced_labels
from ganserve.errors import InvalidArgument, UnexpectedReply
from ganserve.latent import truncation_problem
from ganserve.retry import RetryPolicy
from ganserve.tracecontext import capture

__all__ = ["Mixed", "SyntheticDataset", "mix", "part_blocks"]

UNLABELLED = -1  # the label of an unconditional model's image
_CHUNK = 256  # images per streamed message, as bulk jobs read them
_END = object()  # a source that has run out (None may be an item)
_IDENTITY = ("model", "version", "seed", "start_index", "count", "block_size", "rank", "world_size")
_OPTIONAL_IDENTITY = {"truncation": 0.0}  # a state saved before it existed had it off


def part_blocks(blocks: int, rank: int, world_size: int, worker: int, num_workers: int) -> range:
    """The blocks of part (rank, worker) out of `blocks`, in order: rule 3 of this module, block
    b to rank b mod R and worker (b // R) mod W, i.e. b mod (R*W) == worker*R + rank."""
    return range(worker * world_size + rank, blocks, world_size * num_workers)


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """The caller's rank and world size, else torch.distributed's when initialised, else 0/1."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    if world_size is None:
        world_size = torch.distributed.get_world_size() if distributed else 1
    if not 0 <= rank < world_size:
        raise InvalidArgument(f"rank: {rank}; 0 to world_size - 1 ({world_size})")
    return rank, world_size


def _worker() -> tuple[int, int]:
    """(this DataLoader worker, how many the loader has); (0, 1) in the main process."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class SyntheticDataset(IterableDataset):
    """A model's generated images as `(image, label)` items, streamed from a ganserve server,
    split over DDP ranks and DataLoader workers, resumable (the rules: this module's docstring).
    """

    def __init__(
        self,
        target: str | Sequence[str],
        model: str,
        *,
        count: int | None = None,
        per_class: int | None = None,
        seed: int = 0,
        truncation: float = 0.0,
        version: int = 0,
        start_index: int = 0,
        transform: Callable[[torch.Tensor], Any] | None = None,
        block_size: int = 1024,
        rank: int | None = None,
        world_size: int | None = None,
        timeout: float = 600.0,
        retry: RetryPolicy = JOB_RETRY,
        tls: bool | str | Path = False,
        token: str | None = None,
    ) -> None:
        if (count is None) == (per_class is None):
            raise InvalidArgument("count, per_class: give exactly one")
        if not 0 <= seed < SEEDS:
            raise InvalidArgument(f"seed: {seed}; must be an integer from 0 to 2^64 - 1")
        if block_size < 1:
            raise InvalidArgument(f"block_size: {block_size}; must be at least 1")
        if truncation_problem(truncation):
            raise InvalidArgument(truncation_problem(truncation))
        self.truncation = float(truncation)
        self.target, self.model, self.seed, self.start_index = target, model, seed, start_index
        self.transform, self.block_size = transform, block_size
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        # the clients' options, for the client each worker opens (a channel must not cross a fork)
        # the trace current here (if any) continues in the workers' calls (ganserve.tracecontext)
        self._options: dict[str, Any] = dict(
            timeout=timeout, retry=retry, tls=tls, token=token, trace_context=capture()
        )
        with Client(target, **self._options) as client:
            info = client.describe_model(model, version=version)
        if info.kind == "translation":
            raise InvalidArgument(f"model: {model!r} translates images; it makes no dataset")
        self.version = info.version  # rule 2: pinned
        self.conditional = info.kind == "conditional"
        self.num_classes = info.num_classes if self.conditional else 0
        self.class_names = info.class_names if self.conditional else ()
        self.image_shape = (info.channels, info.height, info.width)
        if per_class is not None:
            if not self.conditional:
                raise InvalidArgument(f"per_class: {model!r} is unconditional; give a count")
            count = per_class * self.num_classes
        assert count is not None
        if count < 1 or not 0 <= start_index <= INDEX_SPACE - count:
            raise InvalidArgument(
                f"count, start_index: {count} images from {start_index}; at least one, and "
                "start_index + count at most 2^64"
            )
        self.count = count
        self._served: dict[str, int] = {}  # items served this pass, by part ("worker/workers")
        self._loaded: set[str] = set()  # parts whose next pass resumes from _served

    # -- the partition (rule 3) -----------------------------------------------------------------

    def _blocks(self, worker: int, num_workers: int) -> Iterator[tuple[int, int]]:
        """(first index, how many) of each block of part (self.rank, worker), in order."""
        blocks = shard_count(self.count, self.block_size)
        for b in part_blocks(blocks, self.rank, self.world_size, worker, num_workers):
            first, n = shard_span(b, self.count, self.block_size)
            yield self.start_index + first, n

    def indices(self, worker: int = 0, num_workers: int = 1) -> Iterator[int]:
        """The indices that DataLoader worker `worker` of `num_workers` serves on this rank, in
        the order it serves them (the defaults: everything this rank serves, block by block)."""
        for first, n in self._blocks(worker, num_workers):
            yield from range(first, first + n)

    def __len__(self) -> int:
        """How many items this rank serves in a pass (all its workers together)."""
        return sum(n for _, n in self._blocks(0, 1))

    # -- streaming --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        worker, num_workers = _worker()
        key = f"{worker}/{num_workers}"
        if self._loaded and key not in self._loaded:
            raise InvalidArgument(
                f"state_dict: made for parts {sorted(self._loaded)}, not for worker {key}: "
                "resume with the same number of DataLoader workers"
            )
        skip = self._served.get(key, 0) if key in self._loaded else 0
        self._loaded.discard(key)
        self._served[key] = skip
        return self._stream(key, worker, num_workers, skip)

    def _stream(
        self, key: str, worker: int, num_workers: int, skip: int
    ) -> Iterator[tuple[Any, int]]:
        with Client(self.target, **self._options) as client:
            for first, n in self._blocks(worker, num_workers):
                if skip >= n:  # served before the state was saved
                    skip -= n
                    continue
                for images, labels in self._block(client, first + skip, n - skip):
                    for image, label in zip(images, labels, strict=True):
                        self._served[key] += 1
                        yield (image if self.transform is None else self.transform(image)), label
                skip = 0

    def _block(
        self, client: Client, first: int, n: int
    ) -> Iterator[tuple[torch.Tensor, list[int]]]:
        """Images `first` .. `first + n - 1`, one message at a time: uint8 [k, C, H, W], labels;
        the requests are the bulk job's (`ganserve.bulk.jobs.run_job`), so are the images."""
        options = dict(
            seed=self.seed,
            start_index=first,
            truncation=self.truncation,
            version=self.version,
            chunk_size=_CHUNK,
        )
        stream = (
            client.generate_stream(self.model, n, balanced=True, **options)
            if self.conditional
            else client.sample_stream(self.model, n, **options)
        )
        expected = first
        with contextlib.closing(stream):  # a reader that stops early cancels the call now
            for batch in stream:
                if batch.start_index != expected:
                    raise UnexpectedReply(
                        f"the server sent images from index {batch.start_index}, not {expected}"
                    )
                k = len(batch)
                if self.conditional:
                    want = balanced_labels(expected, k, self.num_classes)
                    if batch.labels is None or not (batch.labels == want).all():
                        raise UnexpectedReply(
                            f"images {expected}..{expected + k - 1}: the server's labels are "
                            "not the balanced ones"
                        )
                    labels = want.tolist()
                else:
                    labels = [UNLABELLED] * k
                # NHWC → NCHW, copied: the reply's buffer is read-only
                yield torch.from_numpy(batch.pixels.transpose(0, 3, 1, 2).copy()), labels
                expected += k

    # -- torchdata's Stateful (rule 4) ------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What identifies the dataset, and `served`: items served this pass per part."""
        names = (*_IDENTITY, *_OPTIONAL_IDENTITY)
        state: dict[str, Any] = {name: getattr(self, name) for name in names}
        state["served"] = dict(self._served)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next pass of each part in `state_dict` continue after its last served item;
        the state must come from the same dataset (model, version, seed, range, blocks, rank)."""
        given = {**_OPTIONAL_IDENTITY, **state_dict}
        for name in (*_IDENTITY, *_OPTIONAL_IDENTITY):
            if given.get(name) != getattr(self, name):
                raise InvalidArgument(
                    f"state_dict: its {name} is {given.get(name)!r}, this dataset's "
                    f"{getattr(self, name)!r}"
                )
        served = state_dict.get("served")
        if not isinstance(served, dict):
            raise InvalidArgument("state_dict: no `served` mapping")
        self._served = {str(key): int(n) for key, n in served.items()}
        self._loaded = set(self._served)


# -- mixing real and generated data ---------------------------------------------------------


class Mixed(IterableDataset):
    """A real dataset's items interleaved with generated ones (`mix` makes it)."""

    def __init__(
        self,
        real: Dataset | Iterable[Any],
        synthetic: Iterable[Any],
        ratio: float,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if not ratio >= 0 or ratio == float("inf"):
            raise InvalidArgument(f"ratio: {ratio}; generated samples per real one, 0 or more")
        self.real, self.synthetic, self.seed = real, synthetic, seed
        # generated:real as whole numbers per window, e.g. 0.5 → 1 generated per 2 real
        self.ratio = Fraction(ratio).limit_denominator(1000)
        if rank is None and world_size is None and isinstance(synthetic, SyntheticDataset):
            rank, world_size = synthetic.rank, synthetic.world_size
        self.rank, self.world_size = _rank_and_world(rank, world_size)

    def _real_items(self) -> Iterator[Any]:
        """This part's real items: a map-style dataset split as rule 3 splits items (item i
        to part i mod (R*W)); an iterable one is taken as it comes (it splits itself)."""
        if isinstance(self.real, IterableDataset) or not hasattr(self.real, "__getitem__"):
            yield from self.real
            return
        worker, num_workers = _worker()
        for i in part_blocks(len(self.real), self.rank, self.world_size, worker, num_workers):
            yield self.real[i]

    def __iter__(self) -> Iterator[Any]:
        generated, real = self.ratio.numerator, self.ratio.denominator
        worker, _ = _worker()
        sources = {True: iter(self.synthetic), False: self._real_items()}
        rng = random.Random(f"ganserve.data.mix/{self.seed}/{self.rank}/{worker}")
        while True:  # one window: `generated` generated and `real` real items, shuffled
            window = [True] * generated + [False] * real
            rng.shuffle(window)
            for is_generated in window:
                item = next(sources[is_generated], _END)
                if item is _END:
                    return  # either source ran out: the mix ends there
                yield item


def mix(
    real: Dataset | Iterable[Any],
    synthetic: Iterable[Any],
    ratio: float,
    *,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
) -> Mixed:
    """`real`'s items interleaved with `synthetic`'s, `ratio` generated per real one (0.5: one
    generated item per two real ones, exactly, in every window of 3), in an order drawn from
    `seed`; the same arguments (and the same ranks and workers) give the same sequence. It ends
    when either source does. A map-style `real` is split over ranks and DataLoader workers as
    `SyntheticDataset` is (rank and world size taken from `synthetic` if it is one); both must
    yield items of one form (give `SyntheticDataset` a `transform` that makes its images look
    like the real ones)."""
    return Mixed(real, synthetic, ratio, seed=seed, rank=rank, world_size=world_size)
