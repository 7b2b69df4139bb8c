"""The model repository: `<root>/<name>/<version>/model.onnx`, versions are positive integers.

A version is written in plain ASCII decimal with no sign, no leading zero and no spaces, 1 to
2^63 - 1 (the wire's int64): `ganserve.contract.parse_version` is that rule, for folder names
and for the Open Inference Protocol's version strings alike. Any other folder in a model's
folder (`²`, `01`, `v2`, `backup`) is not a version: it is skipped, and the server warns once.
Hidden folders (`.name`) are skipped silently.

Beside the versions, an optional `<root>/<name>/config.json` holds serving knobs for that model
(every key optional; unknown keys are an error, so a typo never goes unnoticed):

```json
{"max_batch_size": 64, "max_queue_delay_ms": 0.0, "max_queue_size": 4096, "precision": "fp32",
 "instances": 2, "intra_op_threads": 1}
```

`"allow_signature_change": true` lets a version serve whose kind, inputs or image shape differ
from the model's serving versions (`ModelCard.signature`); without it such a version is refused
and reported FAILED, so a file swapped for another model's never breaks the callers of this one.

`instances` is Triton's `instance_group { count }`: how many ONNX Runtime sessions serve the
version at once; `intra_op_threads` is the threads each of them uses on the CPU.

`precision: "fp16"` serves `model.fp16.onnx` from the version folder (made by
`python -m ganserve.export ... --fp16`) instead of `model.onnx`. Torch-free: the server reads it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ganserve.contract import parse_version

MODEL_FILE = "model.onnx"
FP16_MODEL_FILE = "model.fp16.onnx"
CONFIG_FILE = "config.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class RepositoryError(ValueError):
    """A repository path, model name or serving config that cannot be used."""


def check_name(name: str) -> str:
    """A model name: lower-case letters, digits, '.', '_', '-'; at most 64 characters."""
    if not _NAME.match(name):
        raise RepositoryError(
            f"model name {name!r}: use lower-case letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


def version_folders(model_dir: Path) -> tuple[list[int], list[str]]:
    """(the version folders of one model, ascending; the other folders, which are not versions
    and are skipped). Files beside the versions (config.json, a README) are neither. A model
    folder that cannot be listed is a RepositoryError."""
    model_dir = Path(model_dir)
    try:
        entries = list(model_dir.iterdir()) if model_dir.is_dir() else []
        found, others = [], []
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            version = parse_version(entry.name)
            if version is None:
                others.append(entry.name)
            else:
                found.append(version)
    except OSError as exc:
        raise RepositoryError(f"{model_dir}: cannot be listed ({exc.strerror})") from None
    return sorted(found), sorted(others)


def versions(model_dir: Path) -> list[int]:
    """The version folders of one model, ascending (other entries are skipped)."""
    return version_folders(model_dir)[0]


def next_version_dir(root: Path, name: str) -> Path:
    """`<root>/<name>/<highest + 1>`, not created."""
    model_dir = Path(root) / check_name(name)
    existing = versions(model_dir)
    return model_dir / str((existing[-1] if existing else 0) + 1)


def model_names(root: Path) -> list[str]:
    """Every folder of `root` that holds at least one version (a folder that cannot be
    listed counts as none: the others are still served)."""
    root = Path(root)
    if not root.is_dir():
        raise RepositoryError(f"model repository {root}: no such folder")
    names = []
    try:
        for p in root.iterdir():
            try:
                if p.is_dir() and versions(p):
                    names.append(p.name)
            except RepositoryError:
                continue
    except OSError as exc:
        message = f"model repository {root}: cannot be listed ({exc.strerror})"
        raise RepositoryError(message) from None
    return sorted(names)


@dataclass(frozen=True)
class ServingConfig:
    """Per-model serving knobs; None means the server's default."""

    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    max_queue_size: int | None = None
    precision: str = "fp32"
    instances: int | None = None
    intra_op_threads: int | None = None
    # which versions are served: "all" (the default), {"latest": N} or {"specific": [1, 3]}
    version_policy: Any = None
    # serve a version whose signature (kind, inputs, image shape) differs from the others'
    allow_signature_change: bool = False

    @property
    def model_file(self) -> str:
        return FP16_MODEL_FILE if self.precision == "fp16" else MODEL_FILE


def _policy_ok(policy: dict[str, Any]) -> bool:
    ((key, value),) = policy.items()
    if key == "latest":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if key == "specific":
        return isinstance(value, list) and all(isinstance(v, int) and v >= 1 for v in value)
    return False


def read_serving_config(model_dir: Path) -> ServingConfig:
    """`<model_dir>/config.json`, or the defaults when there is none."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        return ServingConfig()
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{path}: not readable JSON ({exc})") from exc
    known = {f.name for f in fields(ServingConfig)}
    if not isinstance(values, dict) or set(values) - known:
        unknown = sorted(set(values) - known) if isinstance(values, dict) else values
        raise RepositoryError(f"{path}: unknown keys {unknown}; allowed: {sorted(known)}")
    config = ServingConfig(**values)
    for key in ("max_batch_size", "max_queue_size", "instances", "intra_op_threads"):
        value = getattr(config, key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise RepositoryError(f"{path}: {key} must be a positive integer, got {value!r}")
    delay = config.max_queue_delay_ms
    if delay is not None and (not isinstance(delay, int | float) or delay < 0):
        raise RepositoryError(f"{path}: max_queue_delay_ms must be >= 0, got {delay!r}")
    policy = config.version_policy
    if not (
        policy is None
        or policy == "all"
        or (isinstance(policy, dict) and len(policy) == 1 and _policy_ok(policy))
    ):
        raise RepositoryError(
            f'{path}: version_policy must be "all", {{"latest": N}} (N >= 1) or '
            f'{{"specific": [versions]}}, got {policy!r}'
        )
    if not isinstance(config.allow_signature_change, bool):
        raise RepositoryError(
            f"{path}: allow_signature_change must be true or false, "
            f"got {config.allow_signature_change!r}"
        )
    if config.precision not in ("fp32", "fp16"):
        raise RepositoryError(f"{path}: precision must be fp32 or fp16, got {config.precision!r}")
    return config
