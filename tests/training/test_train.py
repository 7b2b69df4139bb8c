"""Training runs: dry runs, a short real run, checkpoints, resume, seeds and DDP."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganserve.training import checkpoint
from ganserve.training.cli import main
from ganserve.training.config import TrainConfig
from ganserve.training.families import build_gan
from ganserve.training.trainer import train


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "family", ["dcgan", "cgan", "pix2pix", "vae", "srgan", "inpaint", "cyclegan"]
)
def test_dry_run_writes_a_checkpoint_grid_and_log(family: str, tmp_path: Path) -> None:
    assert main([family, "--out", str(tmp_path), "--dry-run", "--quiet"]) == 0
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["step"] == 2 and state["family"] == family
    assert (tmp_path / "samples" / "epoch_000.png").stat().st_size > 100
    assert read_log(tmp_path)[-1]["step"] == 2
    assert json.loads((tmp_path / "config.json").read_text())["family"] == family


@pytest.mark.parametrize("family", ["dcgan", "cgan", "pix2pix", "srgan", "inpaint"])
def test_short_real_run_keeps_losses_finite_and_moves_both_nets(
    family: str, tmp_path: Path
) -> None:
    config = TrainConfig(family=family, ngf=16, ndf=16, batch_size=32, max_steps=6, log_every=1)
    config = config.replace(lambda_feature=0)  # srgan: its feature loss is tested on its own
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
           "-m", "ganserve.training", "dcgan", "--out", str(tmp_path), "--dry-run",
           "--quiet"]  # fmt: skip
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


def test_learning_rates_decay_linearly_over_the_last_epochs(tmp_path: Path) -> None:
    # fake data: 256 images → 16 batches of 16 an epoch; decay over the second of two epochs
    config = TrainConfig(family="dcgan", dataset="fake", ngf=8, ndf=8, batch_size=16, epochs=2,
                         decay_fraction=0.5)  # fmt: skip
    result = train(config, tmp_path, device="cpu", run_evaluation=False, progress=False)
    assert result.step == 32 and result.epoch == 2
    state = checkpoint.load(result.checkpoint)
    last_factor = 1 - (31 - 16) / (32 - 16 + 1)  # the 32nd step is step index 31
    for name in ("optimizerG", "optimizerD"):
        lr = state[name]["param_groups"][0]["lr"]
        assert lr == pytest.approx(2e-4 * last_factor)


def test_the_same_code_trains_64x64_rgb_from_an_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for name in ("a", "b", "c"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            pixels = torch.randint(0, 256, (50, 70, 3), generator=rng, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(tmp_path / "data" / name / f"{i}.png")
    config = TrainConfig(family="cgan", dataset=str(tmp_path / "data"), image_size=64, channels=3,
                         ngf=8, ndf=8, batch_size=4, max_steps=2)  # fmt: skip
    result = train(config, tmp_path / "out", device="cpu", run_evaluation=False, progress=False)
    netG, stored, state = checkpoint.load_generator(result.checkpoint)
    assert stored.num_classes == 3 and state["class_names"] == ["a", "b", "c"]
    with torch.no_grad():
        assert netG(torch.randn(2, stored.nz), torch.tensor([0, 2])).shape == (2, 3, 64, 64)


def straight_and_resumed(config: TrainConfig, tmp_path: Path) -> tuple[dict, dict]:
    """The checkpoints of a 2-epoch run, and of 1 epoch resumed for a second."""
    straight = train(config, tmp_path / "a", device="cpu", run_evaluation=False, progress=False)
    train(config.replace(epochs=1), tmp_path / "b", device="cpu", run_evaluation=False,
          progress=False)  # fmt: skip
    resumed = train(config, tmp_path / "b", device="cpu", resume=tmp_path / "b" / "checkpoint.pt",
                    run_evaluation=False, progress=False)  # fmt: skip
    return checkpoint.load(straight.checkpoint), checkpoint.load(resumed.checkpoint)


def test_a_run_resumed_at_an_epoch_end_matches_a_straight_run(tmp_path: Path) -> None:
    config = TrainConfig(family="cgan", dataset="fake", ngf=8, ndf=8, batch_size=32, epochs=2)
    a, b = straight_and_resumed(config, tmp_path)
    assert a["step"] == b["step"] == 16
    assert all(torch.equal(a["netG"][k], b["netG"][k]) for k in a["netG"])


@pytest.mark.parametrize("family", ["dcgan", "srgan"])
def test_a_resumed_run_with_a_weight_average_matches_a_straight_run(
    family: str, tmp_path: Path
) -> None:
    config = TrainConfig(family=family, dataset="fake", ngf=8, ndf=8, batch_size=32, epochs=2,
                         residual_blocks=1, ema=0.9)  # fmt: skip
    a, b = straight_and_resumed(config, tmp_path)
    assert a["ema_updates"] == b["ema_updates"] == 16
    for net in ("netG", "netG_ema"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])
    # the average is what load_generator (evaluation, export) rebuilds, and it is not G itself
    netG, _, _ = checkpoint.load_generator(tmp_path / "a" / "checkpoint.pt")
    weights = netG.state_dict()
    assert all(torch.equal(weights[k], a["netG_ema"][k]) for k in weights)
    first = next(iter(a["netG"]))
    assert not torch.equal(a["netG"][first], a["netG_ema"][first])


def test_wgan_gp_updates_g_once_per_n_critic_steps(tmp_path: Path) -> None:
    config = TrainConfig(family="cgan", dataset="fake", ngf=8, ndf=8, batch_size=16,
                         loss="wgan-gp", d_norm="none", n_critic=3, log_every=1)  # fmt: skip
    gan = build_gan(config, torch.device("cpu"))
    batch = {"image": torch.rand(16, 1, 32, 32) * 2 - 1, "label": torch.arange(16) % 10}
    before = {k: v.detach().clone() for k, v in gan.generator.named_parameters()}
    stats = [gan.train_step(batch) for _ in range(2)]
    assert all(torch.equal(before[k], v) for k, v in gan.generator.named_parameters())
    assert stats[0].loss_G is None and stats[0].gradient_penalty is not None
    third = gan.train_step(batch)  # the third critic step is followed by G's first update
    assert third.loss_G is not None and math.isfinite(third.loss_G)
    assert not torch.equal(before["main.0.weight"], gan.generator.main[0].weight)
