"""The bulk commands: `ganserve generate`, `translate`, `merge` and `verify`, over the library
in `ganserve.bulk`. Each prints one line naming the problem, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ganserve import bulk
from ganserve.bulk import FORMATS, merge, run_job, run_translate_job, verify
from ganserve.bulk.store import open_store
from ganserve.channels import read_token
from ganserve.errors import GanserveError, InvalidArgument, ManifestError


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
    # str, not Path: Path("s3://b/p") is "s3:/b/p", a URL taken for a folder
    p.add_argument(
        "--out",
        required=True,
        help="output folder, or an fsspec URL such as s3://bucket/prefix (resumable; the "
        "endpoint and credentials from the standard AWS environment variables)",
    )
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
    return {"tls": args.tls_ca or False, "token": read_token(args.token_file)}


def main_generate(argv: Sequence[str]) -> int:
    """`ganserve generate`: status 0 done (its summary on stdout), 2 anything refused."""
    p = argparse.ArgumentParser(
        prog="ganserve generate",
        description=bulk.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _job_flags(p, shard_size=1000)
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--count", type=int, help="images in all (balanced over classes)")
    size.add_argument("--per-class", type=int, help="images per class (conditional models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--truncation",
        type=float,
        default=0.0,
        help="the latents' truncation threshold (0.1 to 10; 0, the default: none), recorded "
        "in the manifest",
    )
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
        truncation=args.truncation,
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


def _not_a_folder(prog: str, folder: str) -> bool:
    """A URL no installed fsspec package knows, given for a dataset: a usage error (status 2),
    said in one line."""
    try:
        open_store(folder)
    except InvalidArgument as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return True
    return False


def main_merge(argv: Sequence[str]) -> int:
    """`ganserve merge FOLDER`: status 0 merged, 1 not ready (a worker missing, unfinished or
    still running, a shard not as recorded), 2 a manifest that cannot be read."""
    if len(argv) != 1:
        print("usage: ganserve merge DATASET_FOLDER_OR_URL", file=sys.stderr)
        return 2
    if _not_a_folder("ganserve merge", argv[0]):
        return 2

    def run() -> int:
        print(json.dumps(merge(argv[0])))
        return 0

    return _command("ganserve merge", run, problems=1)


def main_verify(argv: Sequence[str]) -> int:
    """`ganserve verify FOLDER`: status 0 ok, 1 the dataset has problems (one a line), 2 its
    manifest cannot be read."""
    if len(argv) != 1:
        print("usage: ganserve verify DATASET_FOLDER_OR_URL", file=sys.stderr)
        return 2
    if _not_a_folder("ganserve verify", argv[0]):
        return 2

    def run() -> int:
        problems = verify(argv[0])
        for problem in problems:
            print(problem, file=sys.stderr)
        print("ok" if not problems else f"{len(problems)} problem(s)")
        return 0 if not problems else 1

    return _command("ganserve verify", run)


def main_translate(argv: Sequence[str]) -> int:
    """`ganserve translate`: status 0 done (its summary on stdout), 2 anything refused."""
    p = argparse.ArgumentParser(prog="ganserve translate", description=run_translate_job.__doc__)
    _job_flags(p, shard_size=256)
    p.add_argument("--input", required=True, help="folder of source .png files")
    p.add_argument(
        "--mask-dir",
        help="inpainting models: a folder of greyscale .png masks, one per source at the same "
        "relative path and size (white = fill, black = keep)",
    )
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
        masks=args.mask_dir,
        **security,
    )
    return _run_command("ganserve translate", job)
