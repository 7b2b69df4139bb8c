"""Training runs: dry runs, a short real run, checkpoints, resume, seeds and DDP."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training import checkpoint
from training.cli import main
from training.config import TrainConfig
from training.families import build_gan
from training.trainer import train


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family", ["dcgan", "cgan", "pix2pix"])
def test_dry_run_writes_a_checkpoint_grid_and_log(family: str, tmp_path: Path) -> None:
    assert main([family, "--out", str(tmp_path), "--dry-run", "--quiet"]) == 0
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["step"] == 2 and state["family"] == family
    assert (tmp_path / "samples" / "epoch_000.png").stat().st_size > 100
    assert read_log(tmp_path)[-1]["step"] == 2
    assert json.loads((tmp_path / "config.json").read_text())["family"] == family


@pytest.mark.parametrize("family", ["dcgan", "cgan", "pix2pix"])
def test_short_real_run_keeps_losses_finite_and_moves_both_nets(
    family: str, tmp_path: Path
) -> None:
    config = TrainConfig(family=family, ngf=16, ndf=16, batch_size=32, max_steps=6, log_every=1)
    initial = build_gan(config, torch.device("cpu")).state_dict()
    result = train(config, tmp_path, device="cpu", run_evaluation=False, progress=False)
    assert result.step == 6
    records = read_log(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for record in records:
        assert all(math.isfinite(v) for v in record.values())
        assert 0 <= record["D_x"] <= 1
    trained = checkpoint.load(result.checkpoint)
    for net in ("netG", "netD"):
        changed = [
            name
            for name, tensor in initial[net].items()
            if tensor.is_floating_point() and not torch.equal(tensor, trained[net][name])
        ]
        assert len(changed) > len(initial[net]) // 2, f"{net} barely changed"


def test_checkpoint_rebuilds_the_generator_with_identical_outputs(tmp_path: Path) -> None:
    config = TrainConfig(family="cgan", dataset="fake", ngf=8, ndf=8, batch_size=16, max_steps=3)
    result = train(config, tmp_path, device="cpu", run_evaluation=False, progress=False)
    gan = build_gan(config, torch.device("cpu"))
    gan.load_state_dict(checkpoint.load(result.checkpoint))
    netG, loaded_config, state = checkpoint.load_generator(result.checkpoint)
    assert loaded_config == config and state["step"] == 3
    z, label = torch.randn(7, config.nz), torch.arange(7)
    with torch.no_grad():
        assert torch.equal(netG(z, label), gan.generator.eval()(z, label))


def test_resume_continues_the_step_count(tmp_path: Path) -> None:
    first = TrainConfig(family="dcgan", dataset="fake", ngf=8, ndf=8, batch_size=16, max_steps=2,
                        log_every=1)  # fmt: skip
    train(first, tmp_path, device="cpu", run_evaluation=False, progress=False)
    resume = tmp_path / "checkpoint.pt"
    resumed = train(first.replace(max_steps=5), tmp_path, device="cpu", resume=resume,
                    run_evaluation=False, progress=False)  # fmt: skip
    assert resumed.step == 5
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3, 4, 5]
    assert checkpoint.load(tmp_path / "checkpoint.pt")["step"] == 5


def test_resume_refuses_another_family(tmp_path: Path) -> None:
    config = TrainConfig(family="dcgan", dataset="fake", ngf=8, ndf=8, batch_size=16, max_steps=1)
    train(config, tmp_path, device="cpu", run_evaluation=False, progress=False)
    with pytest.raises(checkpoint.CheckpointError, match="dcgan checkpoint cannot resume a cgan"):
        train(config.replace(family="cgan"), tmp_path / "b", resume=tmp_path / "checkpoint.pt")


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    def run(seed: int, out: str) -> dict:
        config = TrainConfig(family="dcgan", dataset="fake", ngf=8, ndf=8, batch_size=16,
                             max_steps=3, seed=seed)  # fmt: skip
        return checkpoint.load(train(config, tmp_path / out, device="cpu", run_evaluation=False,
                                     progress=False).checkpoint)["netG"]  # fmt: skip

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_ddp_two_processes_with_gloo_write_one_checkpoint(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "training", "dcgan", "--out", str(tmp_path), "--dry-run", "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.pt", "config.json", "log.jsonl", "samples"
    ]  # fmt: skip
    assert checkpoint.load(tmp_path / "checkpoint.pt")["step"] == 2
    assert len(read_log(tmp_path)) == 1  # rank 0 alone writes


def test_missing_or_foreign_checkpoint_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        checkpoint.load_generator(tmp_path / "nope.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a ganserve checkpoint"):
        checkpoint.load_generator(tmp_path / "foreign.pt")
