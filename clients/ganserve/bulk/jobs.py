"""The two bulk jobs: `run_job` (a generator's images into a dataset) and `run_translate_job`
(a folder of PNG images, translated, into another); both resumable (see `ganserve.bulk`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ganserve.async_client import AsyncClient
from ganserve.bulk.files import combined, local_folder, sha256_of
from ganserve.bulk.formats import card_evaluation, check_format
from ganserve.bulk.layout import Dataset, Job, Translated
from ganserve.bulk.manifest import FORMATS, MANIFEST, worker_manifest
from ganserve.bulk.progress import Progress
from ganserve.bulk.store import open_store
from ganserve.contract import INDEX_SPACE, SEEDS
from ganserve.errors import InvalidArgument, UnexpectedReply
from ganserve.latent import truncation_problem
from ganserve.png import PngError, encode_png, png_header
from ganserve.retry import RetryPolicy
from ganserve.types import ModelInfo

JOB_RETRY = RetryPolicy(max_attempts=30, max_backoff=5.0)  # a job outlives a server restart


async def _run_shards(
    todo: list[int], streams: int, make: Callable[[int], Awaitable[None]]
) -> None:
    """Make the shards in `todo` with `streams` workers, each taking the next shard."""

    async def worker() -> None:
        while todo:
            await make(todo.pop(0))

    await asyncio.gather(*(worker() for _ in range(min(streams, len(todo)))))


async def _describe(client: AsyncClient, model: str, version: int) -> ModelInfo:
    info = await client.describe_model(model, version=version)
    if info.kind == "translation":
        raise InvalidArgument(f"model: {model!r} translates images; use `ganserve translate`")
    return info


def _check_job(
    count: int | None,
    per_class: int | None,
    seed: int,
    fmt: str,
    shard_size: int,
    streams: int,
    worker_index: int,
    workers: int,
    truncation: float = 0.0,
) -> None:
    """run_job's arguments that need no server, checked before anything is touched."""
    if not 0 <= worker_index < workers:
        raise InvalidArgument(f"worker_index: {worker_index}; 0 to workers - 1 ({workers})")
    check_format(fmt, FORMATS)
    if shard_size < 1 or streams < 1:
        raise InvalidArgument("shard_size, streams: must be at least 1")
    if (count is None) == (per_class is None):
        raise InvalidArgument("count, per_class: give exactly one")
    if not 0 <= seed < SEEDS:
        raise InvalidArgument(f"seed: {seed}; must be an integer from 0 to 2^64 - 1")
    if truncation_problem(truncation):
        raise InvalidArgument(truncation_problem(truncation))
    for name, n in (("count", count), ("per_class", per_class)):
        if n is not None and not 1 <= n <= INDEX_SPACE:
            raise InvalidArgument(f"{name}: {n}; must be an integer from 1 to 2^64")


async def run_job(
    servers: Sequence[str],
    model: str,
    out: str | Path,
    *,
    count: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
    truncation: float = 0.0,
    fmt: str = "npz",
    shard_size: int = 1000,
    streams: int = 2,
    version: int = 0,
    timeout: float = 600.0,
    quiet: bool = False,
    tls: bool | str | Path = False,
    token: str | None = None,
    worker_index: int = 0,
    workers: int = 1,
) -> dict[str, Any]:
    """Make (or finish) the dataset; returns a summary. See `ganserve.bulk`'s docstring. `tls` and
    `token` are the clients' (a CA file, and a bearer token). With `workers` > 1 this process
    makes only the shards k with k % workers == worker_index, into the same folder as the
    other workers, each with a manifest of its own; `merge` assembles `manifest.jsonl` once
    all have finished (shards are deterministic, so the workers need no coordination)."""
    _check_job(count, per_class, seed, fmt, shard_size, streams, worker_index, workers, truncation)
    store = open_store(out)
    manifest = MANIFEST if workers == 1 else worker_manifest(worker_index, workers)
    async with AsyncClient(
        list(servers), timeout=timeout, retry=JOB_RETRY, tls=tls, token=token
    ) as client:
        info = await _describe(client, model, version)
        conditional = info.kind == "conditional"
        if per_class is not None:
            if not conditional:
                raise InvalidArgument(
                    f"per_class: {model!r} is unconditional and has no classes; give a count"
                )
            count = per_class * info.num_classes
        assert count is not None
        if count > INDEX_SPACE:
            raise InvalidArgument(
                f"per_class: {per_class} images of {info.num_classes} classes; more than 2^64"
            )
        job = Job(
            model,
            info.version,
            count,
            seed,
            fmt,
            shard_size,
            conditional,
            info.num_classes if conditional else 0,
            info.class_names if conditional else (),
            float(truncation),
        )
        dataset = Dataset(store, job, manifest)
        # The folder is taken only now that the job is known: a bad model leaves nothing.
        async with store.lock(None if workers == 1 else manifest):
            records = dataset.manifest.resume(dataset.problem)
            if worker_index == 0:  # one writer: the workers would race on its temporary
                await asyncio.to_thread(dataset.write_card, card_evaluation(info.metadata))
            mine = [k for k in range(job.shards) if k % workers == worker_index]
            progress = Progress(
                sum(job.span(k)[1] for k in mine),
                sum(r["count"] for r in records.values()),
                quiet,
                f"worker {worker_index + 1}/{workers}" if workers > 1 else "",
            )

            async def make(shard: int) -> None:
                start, n = job.span(shard)
                kwargs = dict(
                    seed=seed,
                    start_index=start,
                    truncation=job.truncation,
                    version=job.version,
                    chunk_size=256,
                )
                stream = (
                    client.generate_stream(model, n, balanced=True, **kwargs)
                    if conditional
                    else client.sample_stream(model, n, **kwargs)
                )
                pixels, labels = [], []
                async for batch in stream:
                    if batch.start_index != start + sum(map(len, pixels)):
                        raise UnexpectedReply(
                            f"shard {shard}: the server sent images from index "
                            f"{batch.start_index}, not {start + sum(map(len, pixels))}"
                        )
                    pixels.append(batch.pixels)
                    labels.append(batch.labels)
                    progress.add(len(batch))
                # the server's labels are written (Dataset.write checks them against the job's)
                given = [batch_labels for batch_labels in labels if batch_labels is not None]
                record = await asyncio.to_thread(
                    dataset.write,
                    shard,
                    np.concatenate(pixels) if pixels else np.empty((0, 0, 0, 0), np.uint8),
                    np.concatenate(given) if given else None,
                )
                dataset.manifest.append(record)
                records[shard] = record

            await _run_shards([k for k in mine if k not in records], streams, make)
            dataset.manifest.finish(records)
            if workers == 1:
                dataset.finish(records)
    summary = {
        "out": store.url,
        "images": count,
        "shards": job.shards,
        "model": model,
        "version": job.version,
    }
    if workers > 1:
        summary.update(worker_index=worker_index, workers=workers, made_shards=len(mine))
    return summary


# -- bulk translation: a folder of source images → a folder of translated images -------------


def _png_size(data: bytes, path: Path) -> tuple[int, int]:
    """(width, height) of a source PNG, by the rule the server sizes it with (one home:
    `ganserve.png.png_header`); a file that is not a well-formed PNG is named."""
    try:
        header = png_header(data)
    except PngError as exc:
        raise InvalidArgument(f"input: {path}: {exc}") from None
    return header.width, header.height


async def run_translate_job(
    servers: Sequence[str],
    model: str,
    source: str | Path,
    out: str | Path,
    *,
    shard_size: int = 256,
    streams: int = 2,
    version: int = 0,
    timeout: float = 600.0,
    quiet: bool = False,
    tls: bool | str | Path = False,
    token: str | None = None,
    masks: str | Path | None = None,
) -> dict[str, Any]:
    """Translate every PNG under `source` into `out` (same relative paths), resumably.

    The same guarantees as `run_job`: shards of `shard_size` files in sorted order, written
    atomically, recorded in `out/manifest.jsonl` with their checksums; a re-run redoes only
    missing shards. The job is identified by the model version and the sources' checksums.
    An inpainting model needs `masks`: a folder with one greyscale PNG per source at the same
    relative path and size (white, 255 = fill; black, 0 = keep); their checksum is part of
    the job too, so a resume with other masks is refused.
    """
    source, store = local_folder(source, "source"), open_store(out)
    files = sorted(p for p in source.rglob("*.png") if p.is_file())
    if not files:
        raise InvalidArgument(f"source: no .png files under {source}")
    mask_files: list[Path] = []
    if masks is not None:
        folder = local_folder(masks, "masks")
        mask_files = [folder / p.relative_to(source) for p in files]
        missing = [p for p in mask_files if not p.is_file()]
        if missing:
            raise InvalidArgument(
                f"masks: no mask {missing[0]} for source {files[mask_files.index(missing[0])]} "
                f"({len(missing)} missing; one PNG per source, at the same relative path)"
            )
    if shard_size < 1 or streams < 1:
        raise InvalidArgument("shard_size, streams: must be at least 1")
    async with AsyncClient(
        list(servers), timeout=timeout, retry=JOB_RETRY, tls=tls, token=token
    ) as client:
        info = await client.describe_model(model, version=version)
        if info.kind != "translation":
            raise InvalidArgument(f"model: {model!r} is {info.kind}; use `ganserve generate`")
        if info.masked != bool(mask_files):
            wanted = "fills holes: give --mask-dir" if info.masked else "fills no holes: no masks"
            raise InvalidArgument(f"model: {model!r} {wanted}")
        names = [str(p.relative_to(source)) for p in files]
        header = {
            "model": model,
            "version": info.version,
            "shard_size": shard_size,
            "sources": sha256_of(files),
            "count": len(files),
        }
        if mask_files:
            header["masks"] = sha256_of(mask_files)
        dataset = Translated(store, header)
        async with store.lock():
            done = dataset.manifest.resume(dataset.problem)
            progress = Progress(len(files), sum(r["count"] for r in done.values()), quiet)

            async def make(k: int) -> None:
                first, n = dataset.span(k)
                chunk = list(range(first, first + n))
                blobs = [files[i].read_bytes() for i in chunk]
                holes = [mask_files[i].read_bytes() for i in chunk] if mask_files else None
                groups: dict[tuple[int, int], list[int]] = {}
                for j, blob in enumerate(blobs):  # one call per image size
                    groups.setdefault(_png_size(blob, files[chunk[j]]), []).append(j)
                results: dict[int, np.ndarray] = {}
                for members in groups.values():
                    reply = await client.translate_png(
                        model,
                        [blobs[j] for j in members],
                        version=info.version,
                        mask_png=None if holes is None else [holes[j] for j in members],
                    )
                    results.update(zip(members, reply.pixels, strict=True))
                targets = [str(PurePosixPath(names[i]).with_suffix(".png")) for i in chunk]
                digests = []
                for j, target in enumerate(targets):
                    data = encode_png(results[j])
                    digests.append(await asyncio.to_thread(store.write, target, data, False))
                record = {
                    "shard": k,
                    "count": len(chunk),
                    "model": model,
                    "version": info.version,
                    "files": targets,
                    "sha256": combined(digests),
                }
                dataset.manifest.append(record)
                done[k] = record
                progress.add(len(chunk))

            todo = [k for k in range(dataset.shards) if k not in done]
            await _run_shards(todo, streams, make)
            dataset.manifest.finish(done)
    return {
        "out": store.url,
        "images": len(files),
        "shards": dataset.shards,
        "model": model,
        "version": info.version,
    }
