"""Self-describing checkpoints: a plain dict with the config, so no flags are needed to reload."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganserve.training.config import ConfigError, TrainConfig

FORMAT = "ganserve.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not match its own config."""


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: a crash mid-write never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save`, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ganserve checkpoint (expected format {FORMAT})")
    return state


def config_of(state: dict[str, Any], path: str | Path = "checkpoint") -> TrainConfig:
    """The training config stored in a checkpoint."""
    try:
        return TrainConfig.from_dict(state["config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: stored config is invalid ({exc})") from exc


def load_generator(path: str | Path) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """(netG in eval mode, its config, the whole checkpoint) from a checkpoint file alone.

    netG carries the weight average (`netG_ema`) when the run kept one (`--ema`): what the
    run's evaluation judged and what is exported and served."""
    from ganserve.training.families import build_generator

    state = load(path)
    config = config_of(state, path)
    netG = build_generator(config)
    try:
        netG.load_state_dict(state.get("netG_ema", state["netG"]))
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: generator weights do not match the stored {config.family} config "
            f"(image_size {config.image_size}, ngf {config.ngf}): {exc}"
        ) from exc
    return netG.eval(), config, state
