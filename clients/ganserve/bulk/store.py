"""Where a dataset lives: a local folder (`LocalStore`) or any fsspec URL (`FsspecStore`:
`s3://bucket/prefix`, and `gs://`, `az://`, `memory://` ... where their fsspec package is
installed; `pip install 'ganserve[s3]'` for S3).

Both keep the bulk guarantees, each in its own way:

- A file appears whole or not at all. Locally: a temporary name, fsync, then a rename
  (`write_atomic`). On an object store a PUT is itself atomic (an object is visible only once
  its upload completed, a multipart one included, and S3 reads are strongly consistent), so a
  shard is PUT to its final key; a temporary key and a server-side copy would add a second write
  and a leftover on a kill, and no safety. On another fsspec filesystem: a temporary name, then
  `mv`. Either way a shard counts as done only once its manifest line is written after it
  (the line is the commit record): a shard a kill left without one is redone on resume and
  reported missing by `verify`.
- The manifest is appended to locally (one fsynced line a record). An object store has no
  append: the manifest object is rewritten whole (one atomic PUT) with every record so far, so a
  kill leaves the last complete version, never a torn line. It costs the manifest's size per
  record (about 350 bytes a shard: 1,000 shards upload about 175 MB in all).
- The lock. Locally `FolderLock` (flock) keeps a second job out of the folder. An object store
  has no lock that a kill -9 releases, and needs none: a job starts only on an empty prefix or on
  one holding its own job's manifest (the header check, as locally), and a new manifest's header
  is created conditionally (`If-None-Match: *`), so of two jobs starting together on one empty
  prefix one is refused. Two processes of the same job (or worker) may run at once: shards are
  deterministic, so both write the same bytes under the same keys, and a record one of them
  loses when the other rewrites the manifest only means that shard is made again; the last to
  finish rewrites the manifest with every shard. Wasted work, never a wrong byte.

The endpoint and credentials are the standard AWS environment's (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_PROFILE`, ...), read by
botocore as boto3 and the aws CLI read them: the same command works against AWS, MinIO or moto.
Nothing here reads, prints or records them; a URL is shown without any `user:password@`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from ganserve.bulk.files import FolderLock, combined, files_problem, write_atomic
from ganserve.errors import GanserveError, InvalidArgument

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")
# fsspec protocols of object stores, where one PUT is atomic and nothing is a folder
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}


def shown(url: str) -> str:
    """A URL as messages and summaries show it: without any `user:password@`."""
    return _USERINFO.sub(r"\1", url)


class LocalStore:
    """A local folder, written as the bulk jobs always have (rename, fsync, flock, no link
    followed)."""

    is_local = True

    def __init__(self, out: Path) -> None:
        self.out = out
        self.url = str(out)

    def where(self, name: str = "") -> str:
        """How a message names the folder, or a file in it."""
        return str(self.out / name) if name else str(self.out)

    def write(self, name: str, data: bytes, sync: bool = True) -> bytes:
        """Write atomically (`write_atomic`); returns the data's sha256 digest."""
        path = self.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, data, sync)

    def create(self, name: str, data: bytes) -> bool:
        """Write a file that is new (the folder lock keeps anyone else out meanwhile)."""
        write_atomic(self.out / name, data)
        return True

    def append(self, name: str, data: bytes) -> None:
        """Append durably (fsync): the line is trusted from now on."""
        with (self.out / name).open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def read(self, name: str) -> bytes | None:
        """A regular file's bytes (links followed), or None when there is none."""
        path = self.out / name
        if not path.is_file():
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def open(self, name: str) -> BinaryIO:
        """A file, open for reading (checked with `problem` first: no link to follow)."""
        return (self.out / name).open("rb")

    def names(self) -> list[str]:
        """The names at the top of the folder."""
        return os.listdir(self.out)

    def remove(self, name: str) -> None:
        """Remove a file, if it is there."""
        (self.out / name).unlink(missing_ok=True)

    def problem(self, names: Iterable[str], sha256: str) -> str | None:
        """`files_problem` of a shard's files: regular files inside the folder matching."""
        return files_problem(self.out, (self.out / name for name in names), sha256)

    def lock(self, worker: str | None = None, create: bool = True) -> FolderLock:
        """The folder lock (see `FolderLock`)."""
        return FolderLock(self.out, worker, create)


class _NoLock:
    """`with` and `async with` both, holding nothing (see the module docstring): only the
    store is checked as it is entered."""

    def __init__(self, check: Callable[[], None]) -> None:
        self.check = check

    def __enter__(self) -> None:
        self.check()

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> None:
        self.check()

    async def __aexit__(self, *exc: object) -> None:
        return None


def _one_line(method: Callable[..., Any]) -> Callable[..., Any]:
    """A storage failure as an OSError naming the store in one line (the commands print it as
    it is), whatever the fsspec package raised: botocore's own errors are no OSErrors."""

    @functools.wraps(method)
    def wrapper(self: FsspecStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except GanserveError:
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and str(exc).startswith(f"{self.url}: "):
                raise  # said already, by a method this one called
            kept = (FileNotFoundError, IsADirectoryError, PermissionError)
            kind = type(exc) if type(exc) in kept else OSError
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise kind(f"{self.url}: {text}") from None

    return wrapper


class FsspecStore:
    """A prefix of an fsspec filesystem: an object store's bucket prefix, or any other. Every
    failure is an OSError naming the URL (never a credential: none is ever in hand here)."""

    is_local = False

    def __init__(self, url: str, fs: Any, root: str) -> None:
        self.url, self.fs, self.root = shown(url), fs, root.rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.object_store = protocol in OBJECT_STORES
        self._manifests: dict[str, bytes] = {}  # what this process last wrote to each manifest

    def where(self, name: str = "") -> str:
        """How a message names the prefix, or an object under it."""
        return f"{self.url.rstrip('/')}/{name}" if name else self.url

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    @_one_line
    def write(self, name: str, data: bytes, sync: bool = True) -> bytes:
        """One PUT on an object store (atomic); elsewhere a temporary name, then `mv`."""
        key = self._key(name)
        if self.object_store:
            self.fs.pipe_file(key, data)
        else:
            folder, base = posixpath.split(key)
            self.fs.makedirs(folder, exist_ok=True)
            tmp = f"{folder}/.{base}.tmp-{uuid.uuid4().hex}"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, key)
        if name in self._manifests:
            self._manifests[name] = data
        return hashlib.sha256(data).digest()

    @_one_line
    def create(self, name: str, data: bytes) -> bool:
        """Write an object only if there is none under its key (`If-None-Match: *` on an object
        store); False when there already is one."""
        key = self._key(name)
        try:
            if self.object_store:
                self.fs.pipe_file(key, data, mode="create")
            elif self.fs.exists(key):
                return False
            else:
                self.write(name, data)
        except FileExistsError:
            return False
        self._manifests[name] = data
        return True

    @_one_line
    def append(self, name: str, data: bytes) -> None:
        """No append on an object store: the object is rewritten whole, atomically."""
        if name not in self._manifests:
            self._manifests[name] = self.read(name) or b""
        self._manifests[name] += data
        self.write(name, self._manifests[name])

    @_one_line
    def read(self, name: str) -> bytes | None:
        """An object's bytes, or None when there is none."""
        try:
            return self.fs.cat_file(self._key(name))
        except (FileNotFoundError, IsADirectoryError):
            return None

    @_one_line
    def open(self, name: str) -> BinaryIO:
        """An object, open for reading (ranged reads: a shard is not fetched whole)."""
        key = self._key(name)
        self.fs.invalidate_cache(key)  # its size, as a listing cached it, may be old
        return self.fs.open(key, "rb")

    @_one_line
    def names(self) -> list[str]:
        """The names under the prefix, one level down (an object store's "folders" too)."""
        self.fs.invalidate_cache()  # another worker may have written meanwhile
        try:
            found = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        names = (posixpath.relpath(p.rstrip("/"), self.root) for p in found)
        return [n for n in names if n not in (".", "") and not n.startswith("..")]

    @_one_line
    def remove(self, name: str) -> None:
        """Remove an object, if it is there."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._key(name))

    @_one_line
    def problem(self, names: Iterable[str], sha256: str) -> str | None:
        """Why a shard's objects do not match `sha256`, or None (an object store has no links
        to follow: every object is a plain file)."""
        digests = []
        for name in names:
            try:
                with self.open(name) as f:
                    digests.append(hashlib.file_digest(f, "sha256").digest())
            except (FileNotFoundError, IsADirectoryError):
                return f"{name}: missing"
        if combined(digests) != sha256:
            return "files missing or not matching the manifest"
        return None

    @_one_line
    def _check(self) -> None:
        """The bucket must exist (a job never makes one); another filesystem's folder is
        made."""
        if self.object_store:
            bucket = self.root.split("/", 1)[0]
            if not self.fs.exists(bucket):
                raise InvalidArgument(
                    f"out: {self.url}: no bucket {bucket!r} there (or no access to it); make "
                    "it first, a job never does"
                )
        else:
            self.fs.makedirs(self.root, exist_ok=True)

    def lock(self, worker: str | None = None, create: bool = True) -> _NoLock:
        """No lock on an fsspec store (the module docstring says why): the bucket is checked."""
        return _NoLock(self._check)


Store = LocalStore | FsspecStore


def open_store(out: str | Path | LocalStore | FsspecStore, what: str = "out") -> Store:
    """The store of a dataset: a local folder for a path (or `file://`), else the fsspec
    filesystem of the URL. InvalidArgument, in one line, for a URL no installed fsspec
    package knows."""
    if isinstance(out, LocalStore | FsspecStore):
        return out
    text = str(out)
    match = _URL.match(text) if isinstance(out, str) else None
    if match is None:
        return LocalStore(Path(out))
    scheme = match[1].lower()
    if scheme == "file":
        return LocalStore(Path(text[len("file://") :]))
    try:
        import fsspec.core
    except ImportError:
        raise InvalidArgument(
            f"{what}: {shown(text)}: a URL needs fsspec; pip install 'ganserve[s3]'"
        ) from None
    try:
        fs, root = fsspec.core.url_to_fs(text)
    except ImportError as exc:  # the protocol's package, e.g. s3fs
        package = getattr(exc, "name", None) or "its fsspec package"
        hint = "pip install 'ganserve[s3]'" if scheme in ("s3", "s3a") else f"install {package}"
        raise InvalidArgument(
            f"{what}: {shown(text)}: {scheme}:// needs {package}; {hint}"
        ) from None
    except ValueError:
        raise InvalidArgument(
            f"{what}: {shown(text)}: {scheme}:// is not a storage fsspec knows; give a local "
            "folder or a URL such as s3://bucket/prefix"
        ) from None
    if not root.strip("/"):
        raise InvalidArgument(f"{what}: {shown(text)}: give a bucket (and a prefix)")
    return FsspecStore(text, fs, root)
