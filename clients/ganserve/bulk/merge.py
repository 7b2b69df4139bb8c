"""Finishing and checking a dataset: `merge` assembles a distributed job's worker manifests
into `manifest.jsonl`; `verify` lists what is wrong with a dataset folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ganserve.bulk.layout import dataset_of
from ganserve.bulk.manifest import (
    BOOKKEEPING,
    MANIFEST,
    read_stored,
    worker_manifest,
    worker_manifests,
    worker_of,
)
from ganserve.bulk.store import Store, open_store
from ganserve.errors import InvalidArgument


def merge(out: str | Path) -> dict[str, Any]:
    """Assemble the manifests of a distributed job's workers into `manifest.jsonl`, once every
    worker has finished: the folder then equals a one-worker run's, byte for byte (the worker
    manifests, and what killed workers left beside them, are removed). ManifestError when a
    worker manifest cannot be read; InvalidArgument when a worker is missing, unfinished or
    made another job, or a shard is not what its record says; FolderLocked while a worker
    still writes."""
    store = open_store(out)
    with store.lock(create=False):  # no worker still writing (a local folder's lock)
        return _merge(store)


def _merge(store: Store) -> dict[str, Any]:
    found = worker_manifests(store.names())
    if not found:
        raise InvalidArgument(f"out: {store.where()} holds no worker manifests to merge")
    indices = [worker_of(name) for name in found]
    workers = {n for _, n in indices}
    if len(workers) != 1:
        raise InvalidArgument(f"out: worker manifests of different worker counts {sorted(workers)}")
    (n,) = workers
    missing, _ = _missing(n, (i for i, _ in indices))
    if missing:
        raise InvalidArgument(f"out: no manifest from worker(s) {missing} of {n} yet")
    header: dict[str, Any] | None = None
    records: dict[int, dict] = {}
    for i in range(n):  # every one is there: n is at most as many as were found
        h, shards = read_stored(store, worker_manifest(i, n))
        if h is None:
            raise InvalidArgument(f"out: {worker_manifest(i, n)} went while merging")
        if header is not None and h != header:
            raise InvalidArgument(f"worker {i} made another job than worker 0: {h} vs {header}")
        header = h
        records.update(shards)
    assert header is not None
    dataset = dataset_of(store, header)
    unfinished, how_many = _missing(dataset.shards, records)
    if unfinished:
        raise InvalidArgument(
            f"shards {unfinished} are not done yet ({how_many} in all): run their "
            "workers again (they resume)"
        )
    for k, record in sorted(records.items()):
        problem = dataset.problem(k, record)
        if problem:
            raise InvalidArgument(f"{problem}; run that shard's worker again")
    dataset.manifest.finish(records)
    dataset.finish(records)
    for name in found:
        store.remove(name)
    for name in store.names():  # what killed workers left: their lock files, temporaries
        if BOOKKEEPING.fullmatch(name):
            store.remove(name)
    return {"out": store.url, "workers": n, "shards": len(records), "images": header["count"]}


def verify(out: str | Path) -> list[str]:
    """Problems found in a dataset folder: empty when its manifest records every shard of its
    job, each as the job's layout gives it and matching its files. ManifestError when the
    manifest cannot be read or breaks its schema."""
    store = open_store(out)
    header, records = read_stored(store, MANIFEST)
    if header is None:
        return [f"{store.where(MANIFEST)}: missing"]
    dataset = dataset_of(store, header)
    missing, how_many = _missing(dataset.shards, records)
    problems = [f"shard {k}: missing from the manifest" for k in missing]
    if how_many > len(missing):
        problems.append(f"shards: {how_many - len(missing)} more missing from the manifest")
    for k, record in sorted(records.items()):
        problem = dataset.problem(k, record)
        if problem:
            problems.append(problem)
    return problems + dataset.extra_problems(complete=not how_many)


def _missing(shards: int, done: Iterable[int], limit: int = 10) -> tuple[list[int], int]:
    """(the first `limit` shards of 0 .. shards - 1 not in `done`, how many in all), without
    counting through every shard (a manifest may claim 2^64)."""
    done = {k for k in done if 0 <= k < shards}
    first: list[int] = []
    k = 0
    while len(first) < limit and k < shards:
        if k not in done:
            first.append(k)
        k += 1
    return first, shards - len(done)
