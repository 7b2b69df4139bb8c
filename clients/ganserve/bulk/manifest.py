"""A bulk job's manifest: what its lines hold, the one reader that checks them, and the writer.

`manifest.jsonl` (a worker's: `manifest.worker-IIII-of-NNNN.jsonl`) is UTF-8 JSON lines. Line 1
is the job, `{"job": {...}}`, always written whole (to a temporary name, then renamed); each
later line is the record of one finished shard, appended. A generation job's header holds
GENERATION_JOB's fields, a translation job's TRANSLATION_JOB's (`sources`: the sources'
checksum; an inpainting job's `masks`: its masks'), and their records GENERATION_RECORD's and
TRANSLATION_RECORD's: every field present, of its type and range, no other field.
`read_manifest` checks each line against them and raises `ManifestError` (a `JobError`)
naming the file, the line and the field. One exception:
a later line that is not JSON and starts like a record, or is the last and unterminated, is a
record torn by a kill; it is skipped, and its shard is simply redone. Whether a well-formed
record says what its job's layout gives (its start index, count, labels, files) is the
dataset's to check (`ganserve.bulk.layout`), against the header and the files.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePath
from typing import Any

from ganserve.bulk.store import LocalStore, Store, open_store
from ganserve.contract import INDEX_SPACE, SEEDS
from ganserve.errors import InvalidArgument, ManifestError
from ganserve.latent import truncation_problem

MANIFEST = "manifest.jsonl"
WORKER_GLOB = "manifest.worker-*-of-*.jsonl"
FORMATS = ("npz", "png", "webdataset", "parquet")  # formats.py has the last two
_WORKER_NAME = re.compile(r"manifest\.worker-([0-9]{4,})-of-([0-9]{4,})\.jsonl")
# What a job leaves beside its manifest while it writes it, or when killed doing so: the
# temporary of a manifest, and a worker's lock file. They do not make a folder anyone's.
BOOKKEEPING = re.compile(
    r"\.(manifest\.jsonl|manifest\.worker-[0-9]+-of-[0-9]+\.jsonl)\.(tmp|lock)"
)
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 40, 40, 40


def short(value: Any) -> str:
    """A value as a one-line message quotes it: its repr, cut short."""
    return _SHORT.repr(value)


def worker_manifest(index: int, workers: int) -> str:
    """The manifest's file name of worker `index` of `workers`."""
    return f"manifest.worker-{index:04d}-of-{workers:04d}.jsonl"


def worker_of(name: str) -> tuple[int, int]:
    """(index, workers) of a worker manifest's file name; ManifestError for any other name."""
    match = _WORKER_NAME.fullmatch(name)
    if not match or not int(match[1]) < int(match[2]):
        raise ManifestError(
            f"{name}: not a worker manifest's name (manifest.worker-IIII-of-NNNN.jsonl, with "
            "0 <= IIII < NNNN)"
        )
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class Field:
    """One field of a manifest line: the rule a message states, and the check of it."""

    rule: str
    ok: Callable[[Any], bool]


def _integer(low: int, high: int | None = None) -> Field:
    rule = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return Field(
        rule,
        lambda v: type(v) is int and v >= low and (high is None or v <= high),  # not a bool
    )


def _relative(name: object) -> bool:
    """A normalised relative path that stays inside the folder it is relative to."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    path = PurePath(name)
    return bool(path.parts) and not path.anchor and ".." not in path.parts and str(path) == name


_NATURAL = _integer(0)
_TEXT = Field("a non-empty string", lambda v: isinstance(v, str) and v != "")
_SHA256 = Field(
    "64 lowercase hex digits",
    lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) is not None,
)
_VERSION = _integer(1)  # a repository's version folders are 1, 2, ...
_SEED = _integer(0, SEEDS - 1)  # ganserve.contract: seeds are uint64
_COUNT = _integer(1, INDEX_SPACE)  # start index + count stay in the index space
_PATHS = Field(
    "a list of relative paths inside the dataset folder",
    lambda v: isinstance(v, list) and all(_relative(p) for p in v),
)

GENERATION_JOB: dict[str, Field] = {
    "model": _TEXT,
    "version": _VERSION,
    "count": _COUNT,
    "seed": _SEED,
    "format": Field(" or ".join(map(repr, FORMATS)), lambda v: isinstance(v, str) and v in FORMATS),
    "shard_size": _integer(1),
    "conditional": Field("true or false", lambda v: isinstance(v, bool)),
    "num_classes": _NATURAL,
    "class_names": Field(
        "a list of strings", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v)
    ),
}
GENERATION_RECORD: dict[str, Field] = {
    "shard": _NATURAL,
    "seed": _SEED,
    "start_index": _NATURAL,
    "count": _COUNT,
    "labels": Field(
        "null or a list of integers >= 0 (images per class)",
        lambda v: v is None or (isinstance(v, list) and all(_NATURAL.ok(n) for n in v)),
    ),
    "model": _TEXT,
    "version": _VERSION,
    # one file's name, or (png shards of more) how many
    "files": Field(
        _PATHS.rule + ', or "N png files"',
        lambda v: _PATHS.ok(v) or (isinstance(v, str) and re.fullmatch("[1-9][0-9]* png files", v)),
    ),
    "sha256": _SHA256,
}
# fields a generation job's header names only when they are on
GENERATION_JOB_OPTIONAL: dict[str, Field] = {
    "truncation": Field(
        "a number from 0.1 to 10 (the header names no truncation when it is off)",
        lambda v: (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and v != 0
            and truncation_problem(v) is None
        ),
    ),
}
TRANSLATION_JOB: dict[str, Field] = {
    "model": _TEXT,
    "version": _VERSION,
    "shard_size": _integer(1),
    "sources": _SHA256,
    "count": _COUNT,
}
# fields a translation job's header names only when it has them: an inpainting job's masks
TRANSLATION_JOB_OPTIONAL: dict[str, Field] = {"masks": _SHA256}
TRANSLATION_RECORD: dict[str, Field] = {
    "shard": _NATURAL,
    "count": _COUNT,
    "model": _TEXT,
    "version": _VERSION,
    "files": _PATHS,
    "sha256": _SHA256,
}


def _check(
    where: str,
    value: dict[str, Any],
    schema: dict[str, Field],
    optional: dict[str, Field] | None = None,
) -> None:
    optional = optional or {}
    for key, field in {**schema, **optional}.items():
        if key not in value:
            if key in optional:
                continue
            raise ManifestError(f"{where}: {key}: missing")
        if not field.ok(value[key]):
            raise ManifestError(f"{where}: {key}: {short(value[key])}; must be {field.rule}")
    extra = sorted(set(value) - set(schema) - set(optional))
    if extra:
        raise ManifestError(f"{where}: {short(extra[0])}: not a field of this manifest")


def _header(where: str, line: dict[str, Any]) -> dict[str, Any]:
    """The job of a manifest's first line, checked."""
    if set(line) != {"job"}:
        raise ManifestError(f'{where}: no job header (the first line must be {{"job": {{...}}}})')
    job = line["job"]
    if not isinstance(job, dict):
        raise ManifestError(f"{where}: job: {short(job)}; must be an object")
    translation = "sources" in job
    if translation:
        _check(where, job, TRANSLATION_JOB, TRANSLATION_JOB_OPTIONAL)
    else:
        _check(where, job, GENERATION_JOB, GENERATION_JOB_OPTIONAL)
    if not translation:
        names, classes = len(job["class_names"]), job["num_classes"]
        if job["conditional"] and (classes < 1 or names != classes):
            raise ManifestError(f"{where}: class_names: {names} names for {classes} classes")
        if not job["conditional"] and (classes or names):
            raise ManifestError(f"{where}: num_classes, class_names: an unconditional job has none")
    return job


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true or false"}


def parse_manifest(data: bytes, name: str) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """(the job header, shard records by shard) of a manifest's bytes; ManifestError naming
    `name`, the line and the field for anything but a record torn by a kill."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the end of the last line
    if not lines:
        raise ManifestError(f"{name}: empty; no job header")
    header: dict[str, Any] = {}
    records: dict[int, dict[str, Any]] = {}
    for number, raw in enumerate(lines, 1):
        where = f"{name} line {number}"
        # A record torn by a kill (the header never is, being written whole) is skipped: its
        # shard is redone. A later append may have continued its line, so it is any later
        # line that starts as a record does, or the last one when unterminated.
        torn = number > 1 and (
            raw.startswith(b"{") or (number == len(lines) and data[-1:] != b"\n")
        )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if torn:
                continue
            raise ManifestError(f"{where}: not UTF-8 text") from None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            if torn:
                continue
            raise ManifestError(f"{where}: not JSON") from None
        if not isinstance(value, dict):
            kind = _JSON_TYPES.get(type(value), "null" if value is None else "a number")
            raise ManifestError(f"{where}: {kind}, not a JSON object")
        if number == 1:
            header = _header(where, value)
        elif "job" in value:
            raise ManifestError(f"{where}: a second job header")
        else:
            _check(where, value, TRANSLATION_RECORD if "sources" in header else GENERATION_RECORD)
            records[value["shard"]] = value  # the last record of a shard redone wins
    return header, records


def read_manifest(path: Path) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    """(the job header, shard records by shard) of the manifest at `path`, (None, {}) when
    there is none. Checked against the schema (see the module docstring): ManifestError."""
    try:
        if not path.is_file():  # follows links; a folder, /dev/zero or a fifo is no manifest
            if not path.exists():
                return None, {}
            raise ManifestError(f"{path.name}: not a regular file")
        data = path.read_bytes()
    except FileNotFoundError:
        return None, {}  # removed meanwhile
    except OSError as exc:
        raise ManifestError(f"{path.name}: cannot read it ({exc.strerror})") from None
    return parse_manifest(data, path.name)


def read_stored(store: Store, name: str) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    """`read_manifest` of the manifest `name` in a store (a local folder, or a bucket prefix)."""
    if isinstance(store, LocalStore):
        return read_manifest(store.out / name)
    data = store.read(name)
    return (None, {}) if data is None else parse_manifest(data, name)


def worker_manifests(names: list[str]) -> list[str]:
    """The names of worker manifests among a folder's names, sorted."""
    return sorted(n for n in names if fnmatch(n, WORKER_GLOB))


class Manifest:
    """`manifest.jsonl` (or a worker's): the job's header line, then one line per finished
    shard."""

    def __init__(self, out: Path | Store, header: dict[str, Any], name: str = MANIFEST) -> None:
        self.store, self.header, self.name = open_store(out), header, name

    def resume(self, problem: Callable[[int, dict], str | None]) -> dict[int, dict]:
        """Check that `out` is this job's to write (nothing is touched otherwise), write the
        header when the manifest is new, and return the shards already finished that `problem`
        finds nothing wrong with."""
        records = self._claim()
        if records is None:
            if self.store.create(self.name, (json.dumps({"job": self.header}) + "\n").encode()):
                return {}
            # made meanwhile by another process (an object store has no folder lock): its job
            # is this one, to resume, or another, refused
            records = self._claim()
            if records is None:
                raise InvalidArgument(f"out: {self.store.where(self.name)} went as it was made")
        return {k: r for k, r in records.items() if problem(k, r) is None}

    def _claim(self) -> dict[int, dict] | None:
        """The records of this job's manifest (None: it has none yet), once the folder is seen
        to be this job's: empty but for bookkeeping, or holding a manifest of this job (for a
        worker, another worker's will do) and none of another. InvalidArgument otherwise."""
        # Listed before the manifests are read: a worker writes its manifest before any file
        # of its own, so if a file of another worker is seen here, its manifest is found below.
        listed = self.store.names()
        found = sorted(n for n in listed if not BOOKKEEPING.fullmatch(n))
        names = [MANIFEST]
        if self.name != MANIFEST:  # a worker: the others' manifests are its job's too
            workers = worker_of(self.name)[1]
            for name in worker_manifests(listed):
                try:
                    theirs = worker_of(name)[1]
                except ManifestError as exc:
                    raise InvalidArgument(
                        f"out: {self.store.where()} holds {exc}; use another folder"
                    ) from None
                if theirs != workers:
                    raise InvalidArgument(
                        f"out: {self.store.where(name)} is of a {theirs}-worker run of a job; "
                        f"give --workers {theirs} to finish it, or use another folder"
                    )
                names.append(name)
        ours, mine = False, None
        for name in names:
            path = self.store.where(name)
            try:
                header, records = read_stored(self.store, name)
            except ManifestError as exc:
                raise InvalidArgument(
                    f"out: {path} is not a manifest of a ganserve job ({exc}); use another folder"
                ) from None
            if header is None:
                continue
            if header != self.header:
                keys = sorted(set(header) | set(self.header))
                diff = {k: (header.get(k), self.header.get(k)) for k in keys}
                diff = {k: was_now for k, was_now in diff.items() if was_now[0] != was_now[1]}
                raise InvalidArgument(
                    f"out: {path} holds a different job (was, now: {diff}); use another folder"
                )
            ours = True
            if name == self.name:
                mine = records
        if not ours and found:
            raise InvalidArgument(
                f"out: {self.store.where()} is not empty and holds no manifest of this job (it "
                f"holds {found[0]!r}); use an empty folder, or this job's own folder to resume it"
            )
        return mine

    def append(self, record: dict) -> None:
        """Record one finished shard (durably: the shard is trusted from now on)."""
        self.store.append(self.name, (json.dumps(record, sort_keys=True) + "\n").encode())

    def finish(self, records: dict[int, dict]) -> None:
        """Rewrite in shard order: identical whatever order the shards finished in."""
        lines = [json.dumps({"job": self.header})]
        lines += [json.dumps(records[k], sort_keys=True) for k in sorted(records)]
        self.store.write(self.name, ("\n".join(lines) + "\n").encode())
