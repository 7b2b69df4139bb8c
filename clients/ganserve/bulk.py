"""Bulk jobs: N images from a generator into a dataset on disk that survives crashes.

The job is cut into shards of `shard_size` consecutive indices under one seed. Each shard is
written to a temporary name and renamed when complete, then recorded in `manifest.jsonl`
(shard, seed, start index, count, labels per class, model, version, files, sha256; the schema
is `ganserve.manifest`'s). A re-run of the same command skips the shards the manifest records
(and whose files still match their checksum) and makes only the missing ones; since an image
is a function of (model version, seed, index, label), the finished dataset is byte-identical
to an uninterrupted run. At the end the manifest is rewritten in shard order, so it is
identical too.

A job starts only in an empty folder (or a new one) or in a folder holding a manifest of the
same job, to resume it; a worker of a distributed job (`--workers N`) also in one holding the
other workers' manifests of the job. Any other folder is refused before anything in it is
touched: the job would write over files named as its own are.

Formats: `npz` (one `shard-NNNNN.npz` per shard: `images` uint8 [n, H, W, C], `indices`,
and `labels` for conditional models; written with fixed zip timestamps so the bytes repeat)
or `png` (one folder per class, `<class>/<index>.png`, the layout torchvision's ImageFolder
reads; `images/` for unconditional models). A class's folder is its name, as the server's model
card gives it, only when that is a plain folder name: 1 to 64 ASCII letters, digits, spaces,
`_`, `+` or `-`, starting with a letter or digit and not ending in a space, no other class's
name ignoring case, and no Windows device name (`NUL`, `COM1`, ...). Any other class, `..`,
`a/b`, `/tmp/x`, an empty or a duplicate name, gets the folder `_<label>` (`_3`), which no
plain name can be: nothing a server says becomes a path.

`verify` (and `merge`, and a resume) checks each record against what the job's layout gives
(shard, start index, count, labels per class, model, version, seed, files), then its files:
each must be a regular file inside the folder (a link is not followed), whose checksum matches
and, for npz, whose `indices` and `labels` are the shard's.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import os
import re
import stat
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not on POSIX: jobs into one folder are not guarded against each other
    fcntl = None  # type: ignore[assignment]

from ganserve.client import AsyncClient, RetryPolicy, read_token
from ganserve.contract import INDEX_SPACE, SEEDS, balanced_labels
from ganserve.errors import FolderLocked, GanserveError, InvalidArgument, UnexpectedReply
from ganserve.manifest import (
    BOOKKEEPING,
    FORMATS,
    MANIFEST,
    WORKER_GLOB,
    Manifest,
    ManifestError,
    read_manifest,
    short,
    worker_manifest,
    worker_of,
)
from ganserve.manifest import write_atomic as _write_atomic
from ganserve.png import PngError, encode_png, png_header
from ganserve.types import ModelInfo

__all__ = [
    "FORMATS",
    "MANIFEST",
    "Dataset",
    "Job",
    "Manifest",
    "ManifestError",
    "class_folders",
    "merge",
    "npz_bytes",
    "read_manifest",
    "run_job",
    "run_translate_job",
    "verify",
    "worker_manifest",
]

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 _+-]{0,62}[A-Za-z0-9_+-])?")
_DEVICE_NAMES = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(10)
}


def class_folders(class_names: Sequence[str]) -> tuple[str, ...]:
    """The png format's folder of each class: its name when that is a plain folder name, else
    `_<label>` (the rule is in the module docstring)."""
    lowered = [name.lower() for name in class_names]
    return tuple(
        name
        if _PLAIN_NAME.fullmatch(name)
        and lowered.count(name.lower()) == 1
        and name.lower() not in _DEVICE_NAMES
        else f"_{label}"
        for label, name in enumerate(class_names)
    )


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
        """How many shards the job has (the last may be short)."""
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
        """The job a manifest's (checked) header records."""
        return cls(**{**header, "class_names": tuple(header["class_names"])})

    def labels(self, start: int, n: int) -> np.ndarray | None:
        """Balanced labels: index i shows class i mod num_classes (`ganserve.contract`)."""
        if not self.conditional:
            return None
        return balanced_labels(start, n, self.num_classes)

    def per_class(self, start: int, n: int) -> list[int] | None:
        """Images per class of the balanced labels of indices [start, start + n), counted
        without making them (a manifest may claim any span)."""
        if not self.conditional:
            return None
        c = self.num_classes

        def below(x: int) -> list[int]:  # indices i < x with i % c == label, per label
            return [(x - label + c - 1) // c for label in range(c)]

        return [b - a for a, b in zip(below(start), below(start + n), strict=True)]


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive whose bytes depend on the arrays alone (fixed zip timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


class _Exclusive:
    """Hold `out` for one job at a time: an advisory lock on the folder itself (no lock file
    is left in the dataset), released when the job ends, fails or its process dies. The
    workers of a distributed job share the folder (a shared lock on it) and each holds a lock
    file of its own, `.<its manifest>.lock`, removed when it ends. Usable with `with` (merge)
    and `async with` (the jobs). `create=False`: a missing folder is an error."""

    def __init__(self, out: Path, worker: str | None = None, create: bool = True) -> None:
        self.out, self.worker, self.create = out, worker, create
        self.fds: list[int] = []
        self.lock_file = None if worker is None else out / f".{worker}.lock"

    def _folder(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise InvalidArgument(f"out: {self.out} is a file, not a folder")
        if not self.create and not self.out.is_dir():
            raise InvalidArgument(f"out: {self.out}: no such folder")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidArgument(
                f"out: cannot make the folder {self.out} ({exc.strerror})"
            ) from None

    def _refuse(self, mine: str = "") -> FolderLocked:
        self.__exit__()
        return FolderLocked(
            f"out: another job is writing to {self.out}{mine}; wait for it to finish, or "
            "use another folder (a finished or killed job leaves the folder free to resume)"
        )

    def __enter__(self) -> None:
        self._folder()
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


def _sha256(paths: Iterable[Path]) -> str:
    """The combined checksum of files, each read in chunks."""

    def digest(path: Path) -> bytes:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").digest()

    return _combined(digest(path) for path in paths)


def _files_problem(out: Path, files: Iterable[Path], sha256: str) -> str | None:
    """Why a shard's files (under `out`) cannot be trusted, or None when each is a regular file
    inside `out` and together they match `sha256`. Stops at the first file that is not."""
    root, inside = out.resolve(), {}
    digests = []
    for path in files:
        name = path.relative_to(out)
        if path.parent not in inside:  # a link among the folders could lead anywhere
            try:
                inside[path.parent] = path.parent.resolve().is_relative_to(root)
            except (OSError, RuntimeError):  # RuntimeError: a loop of links
                inside[path.parent] = False
        outside = f"{name}: not a regular file inside the dataset folder"
        if not inside[path.parent]:
            return outside
        try:  # no link followed; a fifo opened without waiting for a writer
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return f"{name}: missing"
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the file is a link
                return outside
            return f"{name}: cannot read it ({exc.strerror})"
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # /dev/zero would never end
                return outside
            digests.append(hashlib.file_digest(f, "sha256").digest())
    if _combined(digests) != sha256:
        return "files missing or not matching the manifest"
    return None


def _claims(record: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """The first field in which a record says other than its job's layout, or None."""
    for key, value in expected.items():
        if record[key] != value:
            claimed, layout = short(record[key]), short(value)
            return f"{key}: {claimed} in the manifest; the job's layout gives {layout}"
    return None


def _npy_header(f: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    read = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in read:
        raise ValueError(f"npy format {version}")
    shape, _, dtype = read[version](f)
    return shape, dtype


def _npz_problem(path: Path, job: Job, start: int, n: int) -> str | None:
    """Why an npz shard does not hold the arrays of indices [start, start + n) of `job`, or
    None. `images` only by its header; the others once they are seen to fit in the file (a
    manifest may claim any span)."""
    name = path.name
    keys = ["images", "indices", *(["labels"] if job.conditional else [])]
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = {m.filename: m for m in archive.infolist()}
            if sorted(members) != sorted(f"{k}.npy" for k in keys):
                return f"{name}: holds {sorted(members)}; a shard holds {keys}"
            for key in keys:
                member = members[f"{key}.npy"]
                if member.compress_type != zipfile.ZIP_STORED:
                    return f"{name}: {key} is compressed; a shard's arrays are stored"
                with archive.open(member) as f:
                    shape, dtype = _npy_header(f)
                    if key == "images":
                        if len(shape) != 4 or shape[0] != n or dtype != np.uint8:
                            return f"{name}: images: {dtype} {shape}; the shard has {n} uint8"
                        continue
                    if shape != (n,) or dtype != np.int64 or 8 * n > size:
                        return f"{name}: {key}: {dtype} {shape}; the shard has {n} int64"
                    want = np.arange(start, start + n) if key == "indices" else job.labels(start, n)
                    if not np.array_equal(np.frombuffer(f.read(8 * n), np.int64), want):
                        return (
                            f"{name}: {key}: not the job's for indices {start} to {start + n - 1}"
                        )
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        return f"{name}: not a readable npz archive ({exc})"
    return None


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
    """The output folder of a generation job: shard files plus the manifest."""

    def __init__(self, out: Path, job: Job, manifest: str = MANIFEST) -> None:
        self.out, self.job = Path(out), job
        self.manifest = Manifest(self.out, job.header(), manifest)
        self.folders = class_folders(job.class_names)

    @property
    def shards(self) -> int:
        """How many shards the job has."""
        return self.job.shards

    def folder(self, label: int | None) -> Path:
        """Where the png format puts the images of a class (None: an unconditional model's)."""
        if label is None:
            return self.out / "images"
        return self.out / self.folders[label]

    def files(self, shard: int) -> Iterator[Path]:
        """The files of one shard, in order (made as they are asked for: a png shard may be
        long)."""
        start, n = self.job.span(shard)
        if self.job.format == "npz":
            yield self.out / f"shard-{shard:05d}.npz"
            return
        labels = self.job.labels(start, n)
        for k, i in enumerate(range(start, start + n)):
            yield self.folder(None if labels is None else int(labels[k])) / f"{i:08d}.png"

    def expected(self, shard: int) -> dict[str, Any]:
        """The manifest record of one shard, but for its checksum: the job's layout alone."""
        start, n = self.job.span(shard)
        if self.job.format == "npz" or n == 1:
            files: list[str] | str = [str(next(self.files(shard)).relative_to(self.out))]
        else:
            files = f"{n} png files"
        return {
            "shard": shard,
            "seed": self.job.seed,
            "start_index": start,
            "count": n,
            "labels": self.job.per_class(start, n),
            "model": self.job.model,
            "version": self.job.version,
            "files": files,
        }

    def write(self, shard: int, pixels: np.ndarray, labels: np.ndarray | None = None) -> dict:
        """Write one shard atomically and return its manifest record. `labels` are the ones
        the server returned with the images (conditional models): what is written, once they
        are checked to be the job's balanced labels (UnexpectedReply, nothing written, when
        they are not: the manifest's per-class counts and the folders must tell the truth)."""
        start, n = self.job.span(shard)
        expected = self.job.labels(start, n)
        if expected is not None and (labels is None or not np.array_equal(labels, expected)):
            got = "none" if labels is None else f"{labels[:8].tolist()}..."
            raise UnexpectedReply(
                f"shard {shard}: the server returned labels {got}, not the balanced labels "
                f"{expected[:8].tolist()}... of images {start} .. {start + n - 1}; "
                "nothing of the shard is written"
            )
        labels = expected
        files = list(self.files(shard))
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
        return {**self.expected(shard), "sha256": _combined(digests)}

    def problem(self, shard: int, record: dict[str, Any]) -> str | None:
        """Why a (well-formed) record of this job cannot be trusted, or None: it must say what
        the job's layout gives, and its files must match it (see the module docstring)."""
        if shard >= self.job.shards:
            return f"shard {shard}: beyond the job's {self.job.shards} shards"
        problem = _claims(record, self.expected(shard)) or _files_problem(
            self.out, self.files(shard), record["sha256"]
        )
        if problem is None and self.job.format == "npz":
            problem = _npz_problem(next(self.files(shard)), self.job, *self.job.span(shard))
        return None if problem is None else f"shard {shard}: {problem}"


class Translated:
    """The output folder of a translation job: the files each record lists, plus the manifest."""

    def __init__(self, out: Path, header: dict[str, Any]) -> None:
        self.out, self.header = Path(out), header
        self.manifest = Manifest(self.out, header)
        self.shards = -(-header["count"] // header["shard_size"])

    def problem(self, shard: int, record: dict[str, Any]) -> str | None:
        """Why a (well-formed) record of this job cannot be trusted, or None."""
        if shard >= self.shards:
            return f"shard {shard}: beyond the job's {self.shards} shards"
        size = self.header["shard_size"]
        n = min(size, self.header["count"] - shard * size)
        expected = {"count": n, "model": self.header["model"], "version": self.header["version"]}
        problem = _claims(record, expected)
        if problem is None and len(record["files"]) != n:
            problem = f"files: {len(record['files'])} listed for a count of {n}"
        if problem is None:
            files = (self.out / name for name in record["files"])
            problem = _files_problem(self.out, files, record["sha256"])
        return None if problem is None else f"shard {shard}: {problem}"


def _dataset(out: Path, header: dict[str, Any]) -> Dataset | Translated:
    """The dataset a manifest's (checked) header describes."""
    return Translated(out, header) if "sources" in header else Dataset(out, Job.from_header(header))


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


def _check_job(
    count: int | None,
    per_class: int | None,
    seed: int,
    fmt: str,
    shard_size: int,
    streams: int,
    worker_index: int,
    workers: int,
) -> None:
    """run_job's arguments that need no server, checked before anything is touched."""
    if not 0 <= worker_index < workers:
        raise InvalidArgument(f"worker_index: {worker_index}; 0 to workers - 1 ({workers})")
    if fmt not in FORMATS:
        raise InvalidArgument(f"format: {fmt!r}; one of {', '.join(FORMATS)}")
    if shard_size < 1 or streams < 1:
        raise InvalidArgument("shard_size, streams: must be at least 1")
    if (count is None) == (per_class is None):
        raise InvalidArgument("count, per_class: give exactly one")
    if not 0 <= seed < SEEDS:
        raise InvalidArgument(f"seed: {seed}; must be an integer from 0 to 2^64 - 1")
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
    _check_job(count, per_class, seed, fmt, shard_size, streams, worker_index, workers)
    retry = RetryPolicy(max_attempts=30, max_backoff=5.0)
    manifest = MANIFEST if workers == 1 else worker_manifest(worker_index, workers)
    async with AsyncClient(
        list(servers), timeout=timeout, retry=retry, tls=tls, token=token
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
        )
        dataset = Dataset(Path(out), job, manifest)
        # The folder is taken only now that the job is known: a bad model leaves nothing.
        async with _Exclusive(Path(out), None if workers == 1 else manifest):
            records = dataset.manifest.resume(dataset.problem)
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
                chunks, labels = [], []
                async for batch in stream:
                    chunks.append(batch.pixels)
                    if batch.labels is not None:
                        labels.append(batch.labels)
                    progress.add(len(batch))
                returned = np.concatenate(labels) if labels else None
                pixels = np.concatenate(chunks)
                record = await asyncio.to_thread(dataset.write, shard, pixels, returned)
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
    manifests, and what killed workers left beside them, are removed). ManifestError when a
    worker manifest cannot be read; InvalidArgument when a worker is missing, unfinished or
    made another job, or a shard is not what its record says."""
    out = Path(out)
    with _Exclusive(out, create=False):  # no worker still writing
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
    dataset = _dataset(out, header)
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
    for path in found:
        path.unlink()
    for path in out.iterdir():  # what killed workers left: their lock files, temporaries
        if BOOKKEEPING.fullmatch(path.name):
            path.unlink(missing_ok=True)
    return {"out": str(out), "workers": n, "shards": len(records), "images": header["count"]}


def verify(out: str | Path) -> list[str]:
    """Problems found in a dataset folder: empty when its manifest records every shard of its
    job, each as the job's layout gives it and matching its files. ManifestError when the
    manifest cannot be read or breaks its schema."""
    out = Path(out)
    header, records = read_manifest(out / MANIFEST)
    if header is None:
        return [f"{out / MANIFEST}: missing"]
    dataset = _dataset(out, header)
    missing, how_many = _missing(dataset.shards, records)
    problems = [f"shard {k}: missing from the manifest" for k in missing]
    if how_many > len(missing):
        problems.append(f"shards: {how_many - len(missing)} more missing from the manifest")
    for k, record in sorted(records.items()):
        problem = dataset.problem(k, record)
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
    token = None if args.token_file is None else read_token(args.token_file)
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
        help="this process's shards: k %% workers == index (default $JOB_COMPLETION_INDEX, "
        "which a Kubernetes Indexed Job sets, else 0)",
    )
    args = p.parse_args(argv)
    if args.worker_index is None:
        index = os.environ.get("JOB_COMPLETION_INDEX", "0")
        if not (index.isascii() and index.isdigit() and len(index) <= 18):
            p.error(f"JOB_COMPLETION_INDEX: {index[:40]!r}; a worker index 0, 1, ...")
        args.worker_index = int(index)
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
    async with AsyncClient(
        list(servers), timeout=timeout, retry=retry, tls=tls, token=token
    ) as client:
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
        dataset = Translated(out, header)
        async with _Exclusive(out):
            done = dataset.manifest.resume(dataset.problem)
            progress = Progress(len(files), sum(r["count"] for r in done.values()), quiet)

            async def make(k: int) -> None:
                chunk = list(range(k * shard_size, min((k + 1) * shard_size, len(files))))
                blobs = [files[i].read_bytes() for i in chunk]
                groups: dict[tuple[int, int], list[int]] = {}
                for j, blob in enumerate(blobs):  # one call per image size
                    groups.setdefault(_png_size(blob, files[chunk[j]]), []).append(j)
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
                dataset.manifest.append(record)
                done[k] = record
                progress.add(len(chunk))

            todo = [k for k in range(dataset.shards) if k not in done]
            await _run_shards(todo, streams, make)
            dataset.manifest.finish(done)
    return {
        "out": str(out),
        "images": len(files),
        "shards": dataset.shards,
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
