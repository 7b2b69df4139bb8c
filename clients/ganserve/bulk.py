"""Bulk jobs: N images from a generator into a dataset on disk that survives crashes.

The job is cut into shards of `shard_size` consecutive indices under one seed. Each shard is
written to a temporary name and renamed when complete, then recorded in `manifest.jsonl`
(shard, seed, start index, count, labels per class, model, version, files, sha256; the schema
is `ganserve.manifest`'s). A re-run of the same command skips the shards the manifest records
(and whose files still match their checksum) and makes only the missing ones; since an image
is a function of (model version, seed, index, label), the finished dataset is byte-identical
to an uninterrupted run. At the end the manifest is rewritten in shard order, so it is
identical too.

Formats: `npz` (one `shard-NNNNN.npz` per shard: `images` uint8 [n, H, W, C], `indices`,
and `labels` for conditional models; written with fixed zip timestamps so the bytes repeat)
or `png` (one folder per class, `<class>/<index>.png`, the layout torchvision's ImageFolder
reads; `images/` for unconditional models).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not on POSIX: jobs into one folder are not guarded against each other
    fcntl = None  # type: ignore[assignment]

from ganserve.client import AsyncClient, RetryPolicy
from ganserve.errors import GanserveError, InvalidArgument
from ganserve.manifest import (
    FORMATS,
    MANIFEST,
    WORKER_GLOB,
    ManifestError,
    read_manifest,
    worker_manifest,
    worker_of,
)
from ganserve.png import encode_png
from ganserve.types import ModelInfo

__all__ = [
    "FORMATS",
    "MANIFEST",
    "Dataset",
    "Job",
    "Manifest",
    "ManifestError",
    "merge",
    "npz_bytes",
    "read_manifest",
    "run_job",
    "run_translate_job",
    "verify",
    "worker_manifest",
]

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Job:
    """What a bulk job makes; a re-run must describe the same job to resume it."""

    model: str
    version: int
    count: int
    seed: int = 0
    format: str = "npz"
    shard_size: int = 1000
    conditional: bool = False
    num_classes: int = 0
    class_names: tuple[str, ...] = ()

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard_size)

    def span(self, shard: int) -> tuple[int, int]:
        """(start index, count) of one shard."""
        start = shard * self.shard_size
        return start, min(self.shard_size, self.count - start)

    def header(self) -> dict[str, Any]:
        """The job as the manifest's first line records it."""
        return {**asdict(self), "class_names": list(self.class_names)}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> Job:
        return cls(**{**header, "class_names": tuple(header["class_names"])})

    def labels(self, start: int, n: int) -> np.ndarray | None:
        """Balanced labels: index i shows class i mod num_classes (the server's rule)."""
        if not self.conditional:
            return None
        return (np.arange(start, start + n, dtype=np.int64)) % self.num_classes


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive whose bytes depend on the arrays alone (fixed zip timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes, sync: bool = True) -> bytes:
    """Write to a temporary name, then rename: a reader never sees half a file. Returns the
    data's sha256 digest. `sync=False` skips fsync (PNG files: a shard's checksum is checked
    again on resume, so a file lost to a power cut is redone rather than trusted)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).digest()


class _Exclusive:
    """Hold `out` for one job at a time: an advisory lock on the folder itself (no lock file
    is left in the dataset), released when the job ends, fails or its process dies. The
    workers of a distributed job share the folder (a shared lock on it) and each holds a lock
    file of its own, `.<its manifest>.lock`, removed when it ends. Usable with `with` (merge)
    and `async with` (the jobs)."""

    def __init__(self, out: Path, worker: str | None = None) -> None:
        self.out, self.worker = out, worker
        self.fds: list[int] = []
        self.lock_file = None if worker is None else out / f".{worker}.lock"

    def _refuse(self, mine: str = "") -> InvalidArgument:
        self.__exit__()
        return InvalidArgument(
            f"out: another job is writing to {self.out}{mine}; wait for it to finish, or "
            "use another folder (a finished or killed job leaves the folder free to resume)"
        )

    def __enter__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return
        self.fds.append(os.open(self.out, os.O_RDONLY))
        try:
            fcntl.flock(
                self.fds[0], (fcntl.LOCK_SH if self.worker else fcntl.LOCK_EX) | fcntl.LOCK_NB
            )
        except BlockingIOError:
            raise self._refuse() from None
        if self.lock_file is not None:
            # Not the worker's manifest, which is replaced (os.replace) when written whole: the
            # name then has a new inode, and a lock held on the old one keeps no one out.
            while True:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise self._refuse(f" as this worker ({self.worker})") from None
                try:
                    held = os.stat(self.lock_file).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    held = False
                if held:
                    self.fds.append(fd)
                    return
                os.close(fd)  # locked a file its last holder removed as it released it: again

    def __exit__(self, *exc: object) -> None:
        if len(self.fds) == 2 and self.lock_file is not None:
            self.lock_file.unlink(missing_ok=True)  # still locked: no one can take it meanwhile
        for fd in reversed(self.fds):
            os.close(fd)  # closing the descriptor releases the lock
        self.fds.clear()

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


def _combined(digests: Iterable[bytes]) -> str:
    """A shard's checksum: sha256 over its files' sha256 digests, in order."""
    digest = hashlib.sha256()
    for d in digests:
        digest.update(d)
    return digest.hexdigest()


def _sha256(paths: Sequence[Path]) -> str:
    return _combined(hashlib.sha256(path.read_bytes()).digest() for path in paths)


def _problem(shard: int, files: Sequence[Path], sha256: str) -> str | None:
    """Why a recorded shard's files cannot be trusted, or None when they match."""
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        return f"shard {shard}: {len(missing)} file(s) missing, e.g. {missing[0]}"
    if _sha256(files) != sha256:
        return f"shard {shard}: files missing or not matching the manifest"
    return None


class Manifest:
    """`manifest.jsonl`: the job's header line, then one line per finished shard."""

    def __init__(self, out: Path, header: dict[str, Any], name: str = MANIFEST) -> None:
        self.out, self.header = out, header
        self.path = out / name

    def resume(self, files_of: Callable[[int, dict], Sequence[Path]]) -> dict[int, dict]:
        """Check that the folder holds this job (or nothing) and return the shards already
        finished whose files still match their checksums."""
        header, shards = read_manifest(self.path)
        if header is not None and header != self.header:
            diff = {k: (header.get(k), v) for k, v in self.header.items() if header.get(k) != v}
            raise InvalidArgument(
                f"out: {self.out} holds a different job (was, now: {diff}); use another folder"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        if header is None:
            _write_atomic(self.path, (json.dumps({"job": self.header}) + "\n").encode())
        return {k: r for k, r in shards.items() if _problem(k, files_of(k, r), r["sha256"]) is None}

    def append(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def finish(self, records: dict[int, dict]) -> None:
        """Rewrite in shard order: identical whatever order the shards finished in."""
        lines = [json.dumps({"job": self.header})]
        lines += [json.dumps(records[k], sort_keys=True) for k in sorted(records)]
        _write_atomic(self.path, ("\n".join(lines) + "\n").encode())


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


async def _run_shards(
    todo: list[int], streams: int, make: Callable[[int], Awaitable[None]]
) -> None:
    """Make the shards in `todo` with `streams` workers, each taking the next shard."""

    async def worker() -> None:
        while todo:
            await make(todo.pop(0))

    await asyncio.gather(*(worker() for _ in range(min(streams, len(todo)))))


class Dataset:
    """The output folder: shard files plus the manifest."""

    def __init__(self, out: Path, job: Job, manifest: str = MANIFEST) -> None:
        self.out, self.job = Path(out), job
        self.manifest = Manifest(self.out, job.header(), manifest)

    def folder(self, label: int | None) -> Path:
        if label is None:
            return self.out / "images"
        return self.out / self.job.class_names[label]

    def files(self, shard: int) -> list[Path]:
        start, n = self.job.span(shard)
        if self.job.format == "npz":
            return [self.out / f"shard-{shard:05d}.npz"]
        labels = self.job.labels(start, n)
        return [
            self.folder(None if labels is None else int(labels[k])) / f"{start + k:08d}.png"
            for k in range(n)
        ]

    def write(self, shard: int, pixels: np.ndarray) -> dict:
        """Write one shard atomically and return its manifest record."""
        start, n = self.job.span(shard)
        labels = self.job.labels(start, n)
        files = self.files(shard)
        if self.job.format == "npz":
            arrays = {"images": pixels, "indices": np.arange(start, start + n, dtype=np.int64)}
            if labels is not None:
                arrays["labels"] = labels
            digests = [_write_atomic(files[0], npz_bytes(arrays))]
        else:
            digests = []
            for path, image in zip(files, pixels, strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                digests.append(_write_atomic(path, encode_png(image), sync=False))
        per_class = None if labels is None else np.bincount(labels, minlength=self.job.num_classes)
        return {
            "shard": shard,
            "seed": self.job.seed,
            "start_index": start,
            "count": n,
            "labels": None if per_class is None else per_class.tolist(),
            "model": self.job.model,
            "version": self.job.version,
            "files": [str(p.relative_to(self.out)) for p in files]
            if len(files) == 1
            else f"{len(files)} png files",
            "sha256": _combined(digests),
        }


class Progress:
    """Progress on stderr: images, images/s, ETA (no dependencies). On a terminal a line
    redrawn twice a second; otherwise (a log, a Kubernetes pod) a line every 10 s and one at
    the end. `who` names the worker of a distributed job ("worker 2/3")."""

    def __init__(self, total: int, done: int, quiet: bool = False, who: str = "") -> None:
        self.total, self.done, self.quiet = total, done, quiet
        self.started, self.first, self.last = time.monotonic(), done, 0.0
        self.who = f"{who}: " if who else ""
        self.terminal = sys.stderr.isatty()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        every = 0.5 if self.terminal else 10.0
        if self.quiet or (now - self.last < every and self.done < self.total):
            return
        self.last = now
        rate = (self.done - self.first) / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate else float("inf")
        line = (
            f"{self.who}{self.done:,}/{self.total:,} images  {rate:,.0f} images/s  ETA {eta:,.0f} s"
        )
        if not self.terminal:
            sys.stderr.write(line + "\n")
        else:
            sys.stderr.write(f"\r{line}   " + ("\n" if self.done >= self.total else ""))
        sys.stderr.flush()


async def _describe(client: AsyncClient, model: str, version: int) -> ModelInfo:
    info = await client.describe_model(model, version=version)
    if info.kind == "translation":
        raise InvalidArgument(f"model: {model!r} translates images; use `ganserve translate`")
    return info


async def run_job(
    servers: Sequence[str],
    model: str,
    out: str | Path,
    *,
    count: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
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
    """Make (or finish) the dataset; returns a summary. See the module docstring. `tls` and
    `token` are the clients' (a CA file, and a bearer token). With `workers` > 1 this process
    makes only the shards k with k % workers == worker_index, into the same folder as the
    other workers, each with a manifest of its own; `merge` assembles `manifest.jsonl` once
    all have finished (shards are deterministic, so the workers need no coordination)."""
    if not 0 <= worker_index < workers:
        raise InvalidArgument(f"worker_index: {worker_index}; 0 to workers - 1 ({workers})")
    if fmt not in FORMATS:
        raise InvalidArgument(f"format: {fmt!r}; one of {', '.join(FORMATS)}")
    if shard_size < 1 or streams < 1:
        raise InvalidArgument("shard_size, streams: must be at least 1")
    if (count is None) == (per_class is None):
        raise InvalidArgument("count, per_class: give exactly one")
    retry = RetryPolicy(max_attempts=30, max_backoff=5.0)
    manifest = MANIFEST if workers == 1 else worker_manifest(worker_index, workers)
    async with (
        _Exclusive(Path(out), None if workers == 1 else manifest),
        AsyncClient(list(servers), timeout=timeout, retry=retry, tls=tls, token=token) as client,
    ):
        info = await _describe(client, model, version)
        conditional = info.kind == "conditional"
        if per_class is not None:
            if not conditional:
                raise InvalidArgument(
                    f"per_class: {model!r} is unconditional and has no classes; give a count"
                )
            count = per_class * info.num_classes
        assert count is not None
        if count < 1:
            raise InvalidArgument(f"count: {count}; must be at least 1")
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
        )
        dataset = Dataset(Path(out), job, manifest)
        records = dataset.manifest.resume(lambda k, _: dataset.files(k))
        mine = [k for k in range(job.shards) if k % workers == worker_index]
        progress = Progress(
            sum(job.span(k)[1] for k in mine),
            sum(r["count"] for r in records.values()),
            quiet,
            f"worker {worker_index + 1}/{workers}" if workers > 1 else "",
        )

        async def make(shard: int) -> None:
            start, n = job.span(shard)
            kwargs = dict(seed=seed, start_index=start, version=job.version, chunk_size=256)
            stream = (
                client.generate_stream(model, n, balanced=True, **kwargs)
                if conditional
                else client.sample_stream(model, n, **kwargs)
            )
            chunks = []
            async for batch in stream:
                chunks.append(batch.pixels)
                progress.add(len(batch))
            record = await asyncio.to_thread(dataset.write, shard, np.concatenate(chunks))
            dataset.manifest.append(record)
            records[shard] = record

        await _run_shards([k for k in mine if k not in records], streams, make)
        dataset.manifest.finish(records)
        summary = {
            "out": str(out),
            "images": count,
            "shards": job.shards,
            "model": model,
            "version": job.version,
        }
        if workers > 1:
            summary.update(worker_index=worker_index, workers=workers, made_shards=len(mine))
        return summary


def merge(out: str | Path) -> dict[str, Any]:
    """Assemble the manifests of a distributed job's workers into `manifest.jsonl`, once every
    worker has finished: the folder then equals a one-worker run's, byte for byte (the worker
    manifests are removed). ManifestError when a worker manifest cannot be read;
    InvalidArgument when a worker is missing, unfinished or made another job."""
    out = Path(out)
    with _Exclusive(out):  # no worker still writing
        return _merge(out)


def _merge(out: Path) -> dict[str, Any]:
    found = sorted(out.glob(WORKER_GLOB))
    if not found:
        raise InvalidArgument(f"out: {out} holds no worker manifests to merge")
    indices = [worker_of(p.name) for p in found]
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
        h, shards = read_manifest(out / worker_manifest(i, n))
        if h is None:
            raise InvalidArgument(f"out: {worker_manifest(i, n)} went while merging")
        if header is not None and h != header:
            raise InvalidArgument(f"worker {i} made another job than worker 0: {h} vs {header}")
        header = h
        records.update(shards)
    assert header is not None
    if "sources" in header:
        raise InvalidArgument(f"{found[0].name}: a translation job's, which has no workers")
    dataset = Dataset(out, Job.from_header(header))
    unfinished, how_many = _missing(dataset.job.shards, records)
    if unfinished:
        raise InvalidArgument(
            f"shards {unfinished} are not done yet ({how_many} in all): run their "
            "workers again (they resume)"
        )
    for k, record in sorted(records.items()):
        problem = _problem(k, dataset.files(k), record["sha256"])
        if problem:
            raise InvalidArgument(f"{problem}; run that shard's worker again")
    dataset.manifest.finish(records)
    for path in found:
        path.unlink()
    for path in out.glob(".manifest.worker-*-of-*.jsonl.lock"):  # left by killed workers
        path.unlink(missing_ok=True)
    return {"out": str(out), "workers": n, "shards": len(records), "images": header["count"]}


def verify(out: str | Path) -> list[str]:
    """Problems found in a dataset folder (empty when every shard matches its manifest).
    ManifestError when the manifest cannot be read or breaks its schema."""
    out = Path(out)
    header, records = read_manifest(out / MANIFEST)
    if header is None:
        return [f"{out / MANIFEST}: missing"]
    if "sources" in header:  # a translation job: each record lists its output files
        shards = -(-header["count"] // header["shard_size"])

        def files_of(_: int, record: dict) -> Sequence[Path]:
            return _listed_files(out, record)

    else:
        dataset = Dataset(out, Job.from_header(header))
        shards = dataset.job.shards

        def files_of(shard: int, _: dict) -> Sequence[Path]:
            return dataset.files(shard)

    missing, how_many = _missing(shards, records)
    problems = [f"shard {k}: missing from the manifest" for k in missing]
    if how_many > len(missing):
        problems.append(f"shards: {how_many - len(missing)} more missing from the manifest")
    for k, record in sorted(records.items()):
        problem = _problem(k, files_of(k, record), record["sha256"])
        if problem:
            problems.append(problem)
    return problems


def _command(prog: str, run: Callable[[], int], problems: int = 2) -> int:
    """A command's status: `run`'s, or one line on stderr naming the problem. Status 2 for a
    usage error, a manifest that cannot be read, or a file that cannot be; `problems` for any
    other refusal (merge: 1, the dataset is not ready)."""
    try:
        return run()
    except ManifestError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except GanserveError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return problems
    except OSError as exc:  # e.g. a full disk: a message, not a traceback
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2


def _run_command(prog: str, job: Any) -> int:
    """Run a job coroutine for a command: its summary on stdout, or one line and status 2."""

    def run() -> int:
        print(json.dumps(asyncio.run(job)))
        return 0

    return _command(prog, run)


def _job_flags(p: Any, shard_size: int) -> None:
    """The flags generate and translate share: model, output, sharding and servers."""
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=0, help="0: the highest (pinned for the job)")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    p.add_argument("--shard-size", type=int, default=shard_size)
    p.add_argument("--streams", type=int, default=2, help="concurrent streams")
    p.add_argument(
        "--server",
        action="append",
        help="a gRPC target (host:port, dns:///name:port), repeatable; balanced round-robin",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per shard")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--tls-ca", type=Path, help="PEM CA of the servers' TLS certificates")
    p.add_argument("--token-file", type=Path, help="a file holding the bearer token")


def _security(args: Any) -> dict[str, Any]:
    """run_job's `tls` and `token` from --tls-ca and --token-file."""
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            message = f"--token-file: cannot read {args.token_file} ({exc.strerror})"
            raise InvalidArgument(message) from None
    return {"tls": args.tls_ca or False, "token": token}


def main_generate(argv: Sequence[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="ganserve generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _job_flags(p, shard_size=1000)
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--count", type=int, help="images in all (balanced over classes)")
    size.add_argument("--per-class", type=int, help="images per class (conditional models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=FORMATS, default="npz")
    p.add_argument(
        "--workers", type=int, default=1, help="processes sharing the job (then ganserve merge)"
    )
    p.add_argument(
        "--worker-index",
        type=int,
        default=int(os.environ.get("JOB_COMPLETION_INDEX", "0")),
        help="this process's shards: k %% workers == index (default $JOB_COMPLETION_INDEX)",
    )
    args = p.parse_args(argv)
    try:
        security = _security(args)
    except GanserveError as exc:
        print(f"ganserve generate: {exc}", file=sys.stderr)
        return 2
    job = run_job(
        args.server or ["localhost:8500"],
        args.model,
        args.out,
        count=args.count,
        per_class=args.per_class,
        seed=args.seed,
        fmt=args.format,
        shard_size=args.shard_size,
        streams=args.streams,
        version=args.version,
        timeout=args.timeout,
        quiet=args.quiet,
        worker_index=args.worker_index,
        workers=args.workers,
        **security,
    )
    return _run_command("ganserve generate", job)


def main_merge(argv: Sequence[str]) -> int:
    """`ganserve merge FOLDER`: status 0 merged, 1 not ready (a worker missing, unfinished or
    still running, a shard not as recorded), 2 a manifest that cannot be read."""
    if len(argv) != 1:
        print("usage: ganserve merge DATASET_FOLDER", file=sys.stderr)
        return 2

    def run() -> int:
        print(json.dumps(merge(argv[0])))
        return 0

    return _command("ganserve merge", run, problems=1)


def main_verify(argv: Sequence[str]) -> int:
    """`ganserve verify FOLDER`: status 0 ok, 1 the dataset has problems (one a line), 2 its
    manifest cannot be read."""
    if len(argv) != 1:
        print("usage: ganserve verify DATASET_FOLDER", file=sys.stderr)
        return 2

    def run() -> int:
        problems = verify(argv[0])
        for problem in problems:
            print(problem, file=sys.stderr)
        print("ok" if not problems else f"{len(problems)} problem(s)")
        return 0 if not problems else 1

    return _command("ganserve verify", run)


# -- bulk translation: a folder of source images → a folder of translated images -------------


def _listed_files(out: Path, record: dict) -> list[Path]:
    """The output files a translation shard's record lists."""
    return [out / name for name in record["files"]]


def _png_size(data: bytes) -> bytes:
    return data[16:24]  # width and height from the IHDR chunk


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
) -> dict[str, Any]:
    """Translate every PNG under `source` into `out` (same relative paths), resumably.

    The same guarantees as `run_job`: shards of `shard_size` files in sorted order, written
    atomically, recorded in `out/manifest.jsonl` with their checksums; a re-run redoes only
    missing shards. The job is identified by the model version and the sources' checksums.
    """
    source, out = Path(source), Path(out)
    files = sorted(p for p in source.rglob("*.png") if p.is_file())
    if not files:
        raise InvalidArgument(f"source: no .png files under {source}")
    if shard_size < 1 or streams < 1:
        raise InvalidArgument("shard_size, streams: must be at least 1")
    retry = RetryPolicy(max_attempts=30, max_backoff=5.0)
    async with (
        _Exclusive(out),
        AsyncClient(list(servers), timeout=timeout, retry=retry, tls=tls, token=token) as client,
    ):
        info = await client.describe_model(model, version=version)
        if info.kind != "translation":
            raise InvalidArgument(f"model: {model!r} is {info.kind}; use `ganserve generate`")
        names = [str(p.relative_to(source)) for p in files]
        header = {
            "model": model,
            "version": info.version,
            "shard_size": shard_size,
            "sources": _sha256(files),
            "count": len(files),
        }
        manifest = Manifest(out, header)
        done = manifest.resume(lambda _, record: _listed_files(out, record))
        shards = -(-len(files) // shard_size)
        progress = Progress(len(files), sum(r["count"] for r in done.values()), quiet)

        async def make(k: int) -> None:
            chunk = list(range(k * shard_size, min((k + 1) * shard_size, len(files))))
            blobs = [files[i].read_bytes() for i in chunk]
            groups: dict[bytes, list[int]] = {}
            for j, blob in enumerate(blobs):  # one call per image size
                groups.setdefault(_png_size(blob), []).append(j)
            results: dict[int, np.ndarray] = {}
            for members in groups.values():
                reply = await client.translate_png(
                    model, [blobs[j] for j in members], version=info.version
                )
                results.update(zip(members, reply.pixels, strict=True))
            targets = [out / Path(names[i]).with_suffix(".png") for i in chunk]
            digests = []
            for j, target in enumerate(targets):
                target.parent.mkdir(parents=True, exist_ok=True)
                data = encode_png(results[j])
                digests.append(await asyncio.to_thread(_write_atomic, target, data, False))
            record = {
                "shard": k,
                "count": len(chunk),
                "model": model,
                "version": info.version,
                "files": [str(p.relative_to(out)) for p in targets],
                "sha256": _combined(digests),
            }
            manifest.append(record)
            done[k] = record
            progress.add(len(chunk))

        await _run_shards([k for k in range(shards) if k not in done], streams, make)
        manifest.finish(done)
        return {
            "out": str(out),
            "images": len(files),
            "shards": shards,
            "model": model,
            "version": info.version,
        }


def main_translate(argv: Sequence[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="ganserve translate", description=run_translate_job.__doc__)
    _job_flags(p, shard_size=256)
    p.add_argument("--input", type=Path, required=True, help="folder of source .png files")
    args = p.parse_args(argv)
    try:
        security = _security(args)
    except GanserveError as exc:
        print(f"ganserve translate: {exc}", file=sys.stderr)
        return 2
    job = run_translate_job(
        args.server or ["localhost:8500"],
        args.model,
        args.input,
        args.out,
        shard_size=args.shard_size,
        streams=args.streams,
        version=args.version,
        timeout=args.timeout,
        quiet=args.quiet,
        **security,
    )
    return _run_command("ganserve translate", job)
