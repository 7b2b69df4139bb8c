"""The training run every family shares: data, epochs, progress, logs, grids, checkpoints, report.

Run under `torchrun` it trains with DistributedDataParallel (gloo on the CPU, NCCL on GPUs):
each rank takes its share of every epoch's batches, and rank 0 alone writes files.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from ganserve.training import checkpoint, data
from ganserve.training.cas import ValueRecipe
from ganserve.training.classifier import load_or_train
from ganserve.training.config import TrainConfig
from ganserve.training.evaluate import evaluate
from ganserve.training.families import build_gan
from ganserve.training.images import save_grid
from ganserve.training.judge import judges_for
from ganserve.training.srgan import SRGAN

log = logging.getLogger(__name__)

GRID_SAMPLES = 64
# The two judges every evaluation uses, shipped with the project (judge.pt beside it; see
# judges/README.md): retrained on another CPU they come out slightly different networks, so
# figures measured with retrained judges are not comparable across machines.
DEFAULT_CLASSIFIER = Path("judges/classifier.pt")


@dataclass(frozen=True)
class RunResult:
    """What a finished run leaves behind."""

    out_dir: Path
    checkpoint: Path
    step: int
    epoch: int
    report: dict[str, Any] | None


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when present, else CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available")
    return device


def _distributed() -> tuple[int, int]:
    """(rank, world size), joining the process group when started by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), world_size


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    device: str = "auto",
    resume: str | Path | None = None,
    classifier_path: str | Path = DEFAULT_CLASSIFIER,
    run_evaluation: bool = True,
    measure_value: bool = True,
    progress: bool = True,
) -> RunResult:
    """Train `config` into `out_dir` (checkpoint.pt, samples/, log.jsonl, report.json);
    `measure_value`: a cgan's report also has its CAS and augmentation gain (minutes)."""
    out_dir = Path(out_dir)
    rank, world_size = _distributed()
    dev = resolve_device(device)
    if dev.type == "cuda" and world_size > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    main_process = rank == 0

    start_epoch, step, state = 0, 0, None
    if resume is not None:
        state = checkpoint.load(resume)
        stored = checkpoint.config_of(state, resume)
        if stored.family != config.family:
            raise checkpoint.CheckpointError(
                f"{resume}: a {stored.family} checkpoint cannot resume a {config.family} run"
            )
        # The stored config wins, except how long to train.
        config = stored.replace(epochs=config.epochs, max_steps=config.max_steps)
        start_epoch, step = state["epoch"], state["step"]

    train_split, held_split = data.load(config)
    if config.family == "cgan" and len(train_split.class_names) != config.num_classes:
        config = config.replace(num_classes=len(train_split.class_names))

    gan = build_gan(config, dev)
    if isinstance(gan, SRGAN) and config.lambda_feature:
        # srgan's feature loss is taken in the digit classifier's feature space: MNIST only
        if config.dataset == "mnist" and not config.dry_run:
            gan.use_feature_network(load_or_train(classifier_path, progress=progress).model)
        else:
            log.info("srgan: no feature loss on dataset %s (it needs mnist)", config.dataset)
    if state is not None:
        gan.load_state_dict(state)
        torch.set_rng_state(state["rng_state"])  # an epoch-end resume matches a straight run
    if world_size > 1:
        gan.wrap_ddp()
    fixed = gan.fixed_inputs(GRID_SAMPLES, held_split)

    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    log_file = (out_dir / "log.jsonl").open("a") if main_process else None

    per_epoch = train_split.batches_per_epoch(config.batch_size, world_size)
    if per_epoch == 0:
        raise data.DatasetError(
            f"dataset: {len(train_split)} training images make no full batch of "
            f"{config.batch_size} on each of {world_size} processes"
        )
    total = per_epoch * config.epochs
    decay_start = round(total * (1 - config.decay_fraction))  # of the planned run, not max_steps
    if config.max_steps:
        total = min(total, config.max_steps)
    bar = tqdm(
        total=total,
        initial=min(step, total),
        desc=config.family,
        unit="step",
        disable=not (progress and main_process),
        dynamic_ncols=True,
    )
    ckpt_path = out_dir / "checkpoint.pt"

    def snapshot(**extra: Any) -> dict[str, Any]:
        return {
            "family": config.family, "config": config.to_dict(), "step": step, "epoch": epoch,
            "class_names": list(train_split.class_names), "torch_version": str(torch.__version__),
            "rng_state": torch.get_rng_state(), **gan.state_dict(), **extra,
        }  # fmt: skip

    epoch = start_epoch
    started = time.perf_counter()
    try:
        while epoch < config.epochs and step < total:
            batches_done = 0
            for batch in train_split.batches(
                config.batch_size, epoch=epoch, seed=config.seed, rank=rank, world_size=world_size
            ):
                if step >= decay_start:  # linear decay to 0, as pix2pix does
                    gan.scale_learning_rate(1 - (step - decay_start) / (total - decay_start + 1))
                stats = gan.train_step(batch)
                step += 1
                batches_done += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in stats.as_dict().items()}, refresh=False)
                if log_file and (step % config.log_every == 0 or step == total):
                    record = {
                        "step": step,
                        "epoch": epoch,
                        **stats.as_dict(),
                        "seconds": round(time.perf_counter() - started, 2),
                    }
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if step >= total:
                    break
            if batches_done == per_epoch:  # a run cut short by max_steps redoes its last epoch
                epoch += 1
            if main_process:
                gan.finish_average()  # the weight average's BatchNorm statistics, re-estimated
                save_grid(gan.grid_images(fixed), out_dir / "samples" / f"epoch_{epoch:03d}.png")
                checkpoint.save(ckpt_path, snapshot())
    finally:
        bar.close()
        if log_file:
            log_file.close()

    report = None
    if main_process and run_evaluation and not config.dry_run:
        classifier, judge = judges_for(config, classifier_path, progress=progress)
        report = {
            "family": config.family,
            "dataset": config.dataset,
            "step": step,
            "epoch": epoch,
            "train_seconds": round(time.perf_counter() - started, 1),
            **evaluate(
                gan.served_generator.cpu(),
                config,
                train_split,
                held_split,
                classifier,
                judge=judge,
                n=config.eval_samples,
                value=ValueRecipe() if measure_value else None,
            ),
        }
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        checkpoint.save(ckpt_path, snapshot(evaluation=report))
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return RunResult(out_dir, ckpt_path, step, epoch, report)
