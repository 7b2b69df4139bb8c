"""A job's files: atomic writes, checksums, the npz bytes, and the folder lock.

Every file a job makes is written to a temporary name and renamed (`write_atomic`), so a reader
never sees half of one. A shard's checksum is sha256 over its files' sha256 digests, in order
(`combined`); `files_problem` checks a shard's files without following a link out of the
folder or reading anything that is not a regular file. `FolderLock` keeps a second job out of
a folder while one writes to it (`FolderLocked`, a job error: the argument was fine).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not on POSIX: jobs into one folder are not guarded against each other
    fcntl = None  # type: ignore[assignment]

from ganserve.errors import FolderLocked, InvalidArgument

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def local_folder(folder: str | Path, what: str = "source") -> Path:
    """`folder` as a local path; InvalidArgument for a URL (`s3://bucket/prefix`, ...), which
    is never to be taken for a path (`Path` would make a folder `s3:` of it). For a
    translation's sources: a dataset's output may be a URL (`ganserve.bulk.store`)."""
    text = str(folder)
    if _URL.match(text):
        scheme = text.split("://", 1)[0]
        raise InvalidArgument(
            f"{what}: {text}: {scheme}:// URLs are not read from (only --out may be one); give "
            "a local folder"
        )
    return Path(folder)


def write_atomic(path: Path, data: bytes, sync: bool = True) -> bytes:
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


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive whose bytes depend on the arrays alone (fixed zip timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_header(f: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of an .npy member open at its start."""
    version = np.lib.format.read_magic(f)
    read = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in read:
        raise ValueError(f"npy format {version}")
    shape, _, dtype = read[version](f)
    return shape, dtype


def combined(digests: Iterable[bytes]) -> str:
    """A shard's checksum: sha256 over its files' sha256 digests, in order."""
    digest = hashlib.sha256()
    for d in digests:
        digest.update(d)
    return digest.hexdigest()


def sha256_of(paths: Iterable[Path]) -> str:
    """The combined checksum of files, each read in chunks."""

    def digest(path: Path) -> bytes:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").digest()

    return combined(digest(path) for path in paths)


def files_problem(out: Path, files: Iterable[Path], sha256: str) -> str | None:
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
    if combined(digests) != sha256:
        return "files missing or not matching the manifest"
    return None


class FolderLock:
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
