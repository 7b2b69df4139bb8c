"""CycleGAN's parts: two domains no pair links, the pool of past fakes, the step, the judging."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ganserve.training import data
from ganserve.training.config import TrainConfig
from ganserve.training.cyclegan import ImagePool
from ganserve.training.domains import DOMAIN_SEED, halves, paper_style
from ganserve.training.evaluate import evaluate_unpaired
from ganserve.training.families import build_gan
from ganserve.training.trainer import train


def test_the_domains_come_from_disjoint_digits_and_train_unpaired() -> None:
    a, b = halves(4000)
    assert len(a) == len(b) == 2000 and not set(a.tolist()) & set(b.tolist())
    config = TrainConfig.for_family("cyclegan")
    train_split, held = data.load(config)
    assert train_split.unpaired and train_split.source is not None and held.source is not None
    assert train_split.image.shape == train_split.source.shape == (2000, 1, 32, 32)
    # B is dark ink on light paper: its mean is light, A's (white on black) dark
    assert train_split.image.mean() > 0.3 > -0.5 > train_split.source.mean()
    assert torch.equal(held.image, paper_style(held.source, DOMAIN_SEED + 2))
    # no B image is tied to an A image: epoch to epoch, each domain has its own order
    partners = []
    for epoch in (0, 1):
        seen = {}
        for batch in train_split.batches(64, epoch=epoch, seed=0):
            for b_image, a_image in zip(batch["image"], batch["source"], strict=True):
                seen[hash(b_image.numpy().tobytes())] = hash(a_image.numpy().tobytes())
        partners.append(seen)
    both = set(partners[0]) & set(partners[1])
    assert len(both) > 1500
    assert sum(partners[0][k] == partners[1][k] for k in both) < 20


def test_paper_style_is_deterministic_and_in_range() -> None:
    digits = torch.rand(5, 1, 32, 32) * 2 - 1
    a, b = paper_style(digits, 3), paper_style(digits, 3)
    assert torch.equal(a, b) and not torch.equal(a, paper_style(digits, 4))
    assert a.min() >= -1 and a.max() <= 1


def test_the_pool_returns_the_first_fakes_then_mixes_in_old_ones() -> None:
    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)
    later = torch.full((200, 1, 1, 1), 9.0)
    out = pool.query(later)
    old = int((out < 9).sum())
    assert 0 < old <= 4  # some of the stored four come back, each once, replaced by new ones
    assert torch.equal(ImagePool(0, seed=0).query(later), later)


def test_a_short_run_moves_all_four_networks(tmp_path: Path) -> None:
    config = TrainConfig.for_family("cyclegan", dataset="fake", ngf=8, ndf=8, batch_size=16,
                                    max_steps=3, pool_size=2)  # fmt: skip
    initial = build_gan(config, torch.device("cpu")).state_dict()
    result = train(config, tmp_path, device="cpu", run_evaluation=False, progress=False)
    trained = torch.load(result.checkpoint, weights_only=False)
    for net, parts in (("netG", ("ab.", "ba.")), ("netD", ("a.", "b."))):
        for part in parts:
            moved = [k for k, v in initial[net].items() if k.startswith(part)
                     and v.is_floating_point() and not torch.equal(v, trained[net][k])]  # fmt: skip
            assert moved, f"{net}.{part} did not train"


def test_the_judging_passes_a_true_translation_and_fails_a_copy() -> None:
    config = TrainConfig.for_family("cyclegan")
    train_split, all_held = data.load(config)
    assert all_held.source is not None
    n = 300
    held = data.Split(all_held.image[:n], all_held.label[:n], all_held.source[:n])

    class Render(nn.Module):  # the procedural style itself: the best a translation can do
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return paper_style(image, 99)

    class Copy(nn.Module):  # A as it is: keeps the digit, never looks like B
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return image

    from ganserve.training.judge import judges_for
    from ganserve.training.trainer import DEFAULT_CLASSIFIER

    _, judge = judges_for(config, DEFAULT_CLASSIFIER, progress=False)
    good = evaluate_unpaired(Render(), train_split, held, judge)
    assert good["passes"] == {"accuracy_gap_to_real_b": True, "frechet_fraction": True}
    assert "cycle_accuracy" not in good["independent"]  # one direction only
    copy = evaluate_unpaired(Copy(), train_split, held, judge)
    assert not copy["passes"]["frechet_fraction"] and copy["independent"]["frechet_fraction"] == 1
