"""`python -m ganserve.export CHECKPOINT --name NAME`: export, verify, add a version to the
repository."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ganserve.export.onnx_export import ExportError, ExportResult, export_checkpoint
from ganserve.export.repository import (
    FP16_MODEL_FILE,
    MODEL_FILE,
    RepositoryError,
    next_version_dir,
)
from ganserve.training.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganserve.export",
        description="Export a training checkpoint to ONNX, check it against PyTorch, and add "
        "it to the model repository as the next version (models/<name>/<version>/model.onnx).",
    )
    p.add_argument(
        "checkpoint", type=Path, help="checkpoint.pt written by python -m ganserve.training"
    )
    p.add_argument("--name", help="model name in the repository, e.g. mnist-dcgan")
    p.add_argument("--repository", type=Path, default=Path("models"), help="default: models/")
    p.add_argument("--out", type=Path, help="write this one file instead of a repository version")
    p.add_argument(
        "--float", action="store_true", help="float32 NCHW in [-1, 1], not the uint8 NHWC head"
    )
    p.add_argument(
        "--fp16", action="store_true", help=f"also write the half-precision {FP16_MODEL_FILE}"
    )
    return p


def _summary(result: ExportResult) -> dict[str, object]:
    return {
        "path": str(result.path),
        "kind": result.card.kind,
        "precision": result.card.precision,
        "bytes": result.path.stat().st_size,
        "output": f"{result.card.output.dtype} {result.card.output.layout}",
        "max_error_vs_pytorch": result.max_error,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.name is None) == (args.out is None):
        print("error: give --name (a repository version) or --out (one file)", file=sys.stderr)
        return 2
    made: Path | None = None
    try:
        if args.out:
            paths = [args.out, args.out.with_suffix(".fp16.onnx")]
        else:
            made = next_version_dir(args.repository, args.name)
            paths = [made / MODEL_FILE, made / FP16_MODEL_FILE]
        results = [export_checkpoint(args.checkpoint, paths[0], uint8=not args.float)]
        if args.fp16:
            results.append(
                export_checkpoint(args.checkpoint, paths[1], uint8=not args.float, fp16=True)
            )
    except (CheckpointError, ExportError, RepositoryError) as exc:
        if made is not None and made.exists():
            shutil.rmtree(made)  # no half-written version for the server to find
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for result in results:
        print(json.dumps(_summary(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
