"""Where a job's images go: the job, its shards, their files and records, and the checks.

A job is cut into shards of `shard_size` consecutive indices (`shard_count`, `shard_span`: the
one home of that arithmetic). A generation job's shard k is `shard-0000k.npz` (`images`,
`indices`, and `labels` for conditional models) or one png per image in its class's folder
(`class_folders`); its record is what `Dataset.expected` gives, plus the checksum. Labels follow
the balanced rule of `ganserve.contract`; the ones written are the server's, checked against it.
`Dataset.problem` and `Translated.problem` say why a record cannot be trusted, or None.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from ganserve.bulk import formats
from ganserve.bulk.files import combined, npy_header, npz_bytes
from ganserve.bulk.manifest import MANIFEST, Manifest, short
from ganserve.bulk.store import Store, open_store
from ganserve.contract import balanced_counts, balanced_labels
from ganserve.errors import UnexpectedReply
from ganserve.png import encode_png

_BLOCK = 4096  # png file names are made this many at a time (a shard may be long)


def shard_count(count: int, shard_size: int) -> int:
    """How many shards `count` items make, `shard_size` a shard (the last may be short)."""
    return -(-count // shard_size)


def shard_span(shard: int, count: int, shard_size: int) -> tuple[int, int]:
    """(first item, how many) of one shard."""
    start = shard * shard_size
    return start, min(shard_size, count - start)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 _+-]{0,62}[A-Za-z0-9_+-])?")
_DEVICE_NAMES = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(10)
}


def class_folders(class_names: Sequence[str]) -> tuple[str, ...]:
    """The png format's folder of each class: its name when that is a plain folder name, else
    `_<label>` (the rule is in `ganserve.bulk`'s docstring)."""
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
    truncation: float = 0.0  # the latents' truncation threshold (ganserve.latent), 0: none

    @property
    def shards(self) -> int:
        """How many shards the job has (the last may be short)."""
        return shard_count(self.count, self.shard_size)

    def span(self, shard: int) -> tuple[int, int]:
        """(start index, count) of one shard."""
        return shard_span(shard, self.count, self.shard_size)

    def header(self) -> dict[str, Any]:
        """The job as the manifest's first line records it (truncation only when on, so a
        job without it has the header it always had)."""
        header = {**asdict(self), "class_names": list(self.class_names)}
        if not self.truncation:
            del header["truncation"]
        return header

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> Job:
        """The job a manifest's (checked) header records."""
        return cls(**{**header, "class_names": tuple(header["class_names"])})

    def labels(self, start: int, n: int) -> np.ndarray | None:
        """The labels images [start, start + n) must show: the balanced rule of
        `ganserve.contract` (None for an unconditional model)."""
        return balanced_labels(start, n, self.num_classes) if self.conditional else None

    def per_class(self, start: int, n: int) -> list[int] | None:
        """Images per class of indices [start, start + n), counted without making them (a
        manifest may claim any span)."""
        return balanced_counts(start, n, self.num_classes) if self.conditional else None


def claims(record: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """The first field in which a record says other than its job's layout, or None."""
    for key, value in expected.items():
        if record[key] != value:
            claimed, layout = short(record[key]), short(value)
            return f"{key}: {claimed} in the manifest; the job's layout gives {layout}"
    return None


def npz_problem(f: BinaryIO, name: str, job: Job, start: int, n: int) -> str | None:
    """Why an npz shard (open as `f`, named `name`) does not hold the arrays of indices
    [start, start + n) of `job`, or None. `images` only by its header; the others once they
    are seen to fit in the file (a manifest may claim any span)."""
    keys = ["images", "indices", *(["labels"] if job.conditional else [])]
    try:
        size = f.seek(0, 2)
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
            members = {m.filename: m for m in archive.infolist()}
            if sorted(members) != sorted(f"{k}.npy" for k in keys):
                return f"{name}: holds {sorted(members)}; a shard holds {keys}"
            for key in keys:
                member = members[f"{key}.npy"]
                if member.compress_type != zipfile.ZIP_STORED:
                    return f"{name}: {key} is compressed; a shard's arrays are stored"
                with archive.open(member) as array:
                    shape, dtype = npy_header(array)
                    if key == "images":
                        if len(shape) != 4 or shape[0] != n or dtype != np.uint8:
                            return f"{name}: images: {dtype} {shape}; the shard has {n} uint8"
                        continue
                    if shape != (n,) or dtype != np.int64 or 8 * n > size:
                        return f"{name}: {key}: {dtype} {shape}; the shard has {n} int64"
                    want = np.arange(start, start + n) if key == "indices" else job.labels(start, n)
                    if not np.array_equal(np.frombuffer(array.read(8 * n), np.int64), want):
                        return (
                            f"{name}: {key}: not the job's for indices {start} to {start + n - 1}"
                        )
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        return f"{name}: not a readable npz archive ({exc})"
    return None


# each single-file format's check of a shard's contents, after its checksum matched
_STRUCTURE = {
    "npz": npz_problem,
    "webdataset": formats.tar_problem,
    "parquet": formats.parquet_problem,
}


class Dataset:
    """The output folder of a generation job: shard files plus the manifest."""

    def __init__(self, out: Path | Store, job: Job, manifest: str = MANIFEST) -> None:
        self.store, self.job = open_store(out), job
        self.manifest = Manifest(self.store, job.header(), manifest)
        self.folders = class_folders(job.class_names)

    @property
    def shards(self) -> int:
        """How many shards the job has."""
        return self.job.shards

    def folder(self, label: int | None) -> str:
        """Where the png format puts the images of a class (None: an unconditional model's)."""
        return "images" if label is None else self.folders[label]

    def files(self, shard: int) -> Iterator[str]:
        """The files of one shard, in order, by their names in the dataset (made as they are
        asked for: a png shard may be long)."""
        start, n = self.job.span(shard)
        single = self._single_file(shard)
        if single is not None:
            yield single
            return
        for first in range(start, start + n, _BLOCK):
            m = min(_BLOCK, start + n - first)
            labels = self.job.labels(first, m)
            for j, i in enumerate(range(first, first + m)):
                yield f"{self.folder(None if labels is None else int(labels[j]))}/{i:08d}.png"

    def _single_file(self, shard: int) -> str | None:
        """The one file of a shard in the formats that make one (all but png)."""
        if self.job.format == "npz":
            return f"shard-{shard:05d}.npz"
        if self.job.format == "webdataset":
            return formats.tar_name(shard)
        if self.job.format == "parquet":
            return formats.parquet_name(shard, self.job.shards)
        return None

    def expected(self, shard: int) -> dict[str, Any]:
        """The manifest record of one shard, but for its checksum: the job's layout alone."""
        start, n = self.job.span(shard)
        if self.job.format != "png" or n == 1:
            files: list[str] | str = [next(self.files(shard))]
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

    def write(self, shard: int, pixels: np.ndarray, labels: np.ndarray | None) -> dict:
        """Write one shard atomically and return its manifest record: `pixels` and `labels`
        as the server returned them (`Images.labels`), once seen to be what the job asked for;
        UnexpectedReply, and nothing written, when they are not."""
        start, n = self.job.span(shard)
        self._check_reply(shard, pixels, labels)
        files = list(self.files(shard))
        if self.job.format == "npz":
            arrays = {"images": pixels, "indices": np.arange(start, start + n, dtype=np.int64)}
            if labels is not None:
                arrays["labels"] = labels
            digests = [self.store.write(files[0], npz_bytes(arrays))]
        elif self.job.format in ("webdataset", "parquet"):
            encode = formats.tar_bytes if self.job.format == "webdataset" else formats.parquet_bytes
            digests = [self.store.write(files[0], encode(self.job, start, pixels, labels))]
        else:
            digests = [
                self.store.write(name, encode_png(image), sync=False)
                for name, image in zip(files, pixels, strict=True)
            ]
        return {**self.expected(shard), "sha256": combined(digests)}

    def write_card(self, evaluation: dict[str, Any]) -> None:
        """`README.md`, the dataset card (`formats.card`): written as the job starts (by worker
        0 of a distributed job), the same bytes by every run of the job."""
        self.store.write(formats.CARD, formats.card(self.job, evaluation))

    def finish(self, records: dict[int, dict]) -> None:
        """What a finished dataset holds beside its shards: the wids index (webdataset).
        Written only once every shard is recorded (by the one worker, or by `merge`)."""
        if self.job.format == "webdataset" and len(records) == self.job.shards:
            self.store.write(formats.WIDS_INDEX, formats.wids_index(self.job))

    def extra_problems(self, complete: bool) -> list[str]:
        """What `verify` finds wrong beside the shards: a finished webdataset job without its
        wids index, or with one that is not the job's. (The dataset card is description, not
        data: datasets made before it existed verify without one.)"""
        webdataset = complete and self.job.format == "webdataset"
        if webdataset and self.store.read(formats.WIDS_INDEX) != formats.wids_index(self.job):
            return [f"{formats.WIDS_INDEX}: missing or not the job's wids index"]
        return []

    def _check_reply(self, shard: int, pixels: np.ndarray, labels: np.ndarray | None) -> None:
        start, n = self.job.span(shard)
        where = f"shard {shard} (indices {start} to {start + n - 1})"
        if len(pixels) != n:
            raise UnexpectedReply(f"{where}: the server sent {len(pixels)} images for {n}")
        want = self.job.labels(start, n)
        if want is None:
            if labels is not None:
                raise UnexpectedReply(f"{where}: labels from the server for an unconditional job")
            return
        if labels is None or not np.array_equal(labels, want):
            shown = "none" if labels is None else short(labels.tolist())
            raise UnexpectedReply(
                f"{where}: the server's labels {shown} are not the job's {short(want.tolist())} "
                f"(balanced: index i shows class i mod {self.job.num_classes})"
            )

    def problem(self, shard: int, record: dict[str, Any]) -> str | None:
        """Why a (well-formed) record of this job cannot be trusted, or None: it must say what
        the job's layout gives, and its files must match it (see `ganserve.bulk`'s docstring)."""
        if shard >= self.job.shards:
            return f"shard {shard}: beyond the job's {self.job.shards} shards"
        problem = claims(record, self.expected(shard)) or self.store.problem(
            self.files(shard), record["sha256"]
        )
        check = _STRUCTURE.get(self.job.format)
        if problem is None and check is not None:
            name = next(self.files(shard))
            try:
                with self.store.open(name) as f:
                    problem = check(f, PurePosixPath(name).name, self.job, *self.job.span(shard))
            except OSError as exc:  # gone since its checksum was read
                problem = f"{name}: cannot read it ({exc})"
        return None if problem is None else f"shard {shard}: {problem}"


class Translated:
    """The output folder of a translation job: the files each record lists, plus the manifest."""

    def __init__(self, out: Path | Store, header: dict[str, Any]) -> None:
        self.store, self.header = open_store(out), header
        self.manifest = Manifest(self.store, header)
        self.shards = shard_count(header["count"], header["shard_size"])

    def finish(self, records: dict[int, dict]) -> None:
        """Nothing beside the shards: the translated files keep their sources' names."""

    def extra_problems(self, complete: bool) -> list[str]:
        """Nothing beside the shards to check."""
        return []

    def span(self, shard: int) -> tuple[int, int]:
        """(first source, how many) of one shard, in the sources' sorted order."""
        return shard_span(shard, self.header["count"], self.header["shard_size"])

    def problem(self, shard: int, record: dict[str, Any]) -> str | None:
        """Why a (well-formed) record of this job cannot be trusted, or None."""
        if shard >= self.shards:
            return f"shard {shard}: beyond the job's {self.shards} shards"
        _, n = self.span(shard)
        expected = {"count": n, "model": self.header["model"], "version": self.header["version"]}
        problem = claims(record, expected)
        if problem is None and len(record["files"]) != n:
            problem = f"files: {len(record['files'])} listed for a count of {n}"
        if problem is None:
            problem = self.store.problem(record["files"], record["sha256"])
        return None if problem is None else f"shard {shard}: {problem}"


def dataset_of(out: Path | Store, header: dict[str, Any]) -> Dataset | Translated:
    """The dataset a manifest's (checked) header describes."""
    return Translated(out, header) if "sources" in header else Dataset(out, Job.from_header(header))
