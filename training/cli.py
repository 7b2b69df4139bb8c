"""`python -m ganserve.training {dcgan,cgan,pix2pix,vae,srgan,evaluate,classifier}`: train,
evaluate, judge."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ganserve.training.config import D_NORMS, FAMILIES, LOSSES, ConfigError, TrainConfig

# Per-family defaults that differ from TrainConfig's, chosen by measurement (docs/training.md):
# on 4,000 digits, more steps with a narrower net beat fewer with ngf 64, and a linear
# learning-rate decay at the end (as pix2pix does) sharpens the samples.
FAMILY_DEFAULTS: dict[str, dict[str, object]] = {
    # dcgan: spectral norm in D (Miyato et al. 2018) and lr 4e-4 (BatchNorm D, lr 2e-4: ratio
    # 7.0 under the project classifier; spectral at 2e-4: 6.71, at 3e-4: 5.11). 200 epochs
    # (12,400 steps): independent ratio 1.48-1.63 in three runs, where 140 epochs gave
    # 2.08-2.72; 9-10 min on two threads, 15 on one (2026-12-02). Not adopted: the weight
    # average (2.18 vs raw 2.08), mode seeking 0.5 (8.2), wgan-gp (13.4); docs/training.md.
    "dcgan": {
        "ngf": 32,
        "ndf": 32,
        "epochs": 200,
        "decay_fraction": 1 / 3,
        "d_norm": "spectral",
        "lr": 4e-4,
    },
    # cgan: D judges real and fake in one BatchNorm batch (see docs/training.md), and an
    # auxiliary classifier's term in G's loss (Odena et al. 2017): class accuracy 0.981 and
    # Frechet ratio 1.56 under the independent judge, where without it 0.916 and 2.38 (100
    # epochs). Its extra network makes a step dearer, hence 80 epochs to stay within 20 min.
    # The weight average (--ema 0.999) measured worse here (0.913, 2.46), so it stays off.
    "cgan": {
        "ngf": 32,
        "ndf": 32,
        "epochs": 80,
        "decay_fraction": 1 / 3,
        "mixed_batch": True,
        "mode_seeking": 0.5,
        "aux_weight": 1.0,
    },
    "pix2pix": {"ngf": 32, "ndf": 32, "epochs": 20, "decay_fraction": 0.5},
    # vae: a 16-d latent, Adam at 1e-3 with the usual betas (no adversary to balance)
    "vae": {
        "nz": 16,
        "ngf": 32,
        "ndf": 32,
        "epochs": 60,
        "lr": 1e-3,
        "beta1": 0.9,
        "decay_fraction": 1 / 3,
    },
    # srgan: 4x (8x8 → 32x32); L1 content weight 1 against the adversarial 1e-3 (Ledig et al.).
    # A narrow D (ndf 16) and 6 epochs (372 steps): 0.6-0.7 s a step on 2 cores alone, ~4 min.
    "srgan": {"ngf": 32, "ndf": 16, "epochs": 6, "decay_fraction": 0.5, "lambda_l1": 1.0},
}
# --loss wgan-gp: Gulrajani et al. 2017's settings (critic without BatchNorm, 5 critic updates
# per G update, Adam lr 1e-4 with betas (0, 0.9), penalty weight 10); flags still win.
WGAN_GP_DEFAULTS: dict[str, object] = {
    "d_norm": "none",
    "n_critic": 5,
    "lr": 1e-4,
    "beta1": 0.0,
    "beta2": 0.9,
    "gp_weight": 10.0,
    "mixed_batch": False,
}
DRY_RUN = {"dataset": "fake", "max_steps": 2, "epochs": 1, "batch_size": 16}

# flag → TrainConfig field, for every field a user may set
_FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("family", "dry_run")]


def _add_train_parser(sub: argparse._SubParsersAction, family: str) -> None:
    doc = {
        "dcgan": "unconditional DCGAN",
        "cgan": "class-conditional GAN",
        "pix2pix": "pix2pix image translation (default: MNIST edges → digits)",
        "vae": "variational autoencoder (its decoder is served as an unconditional generator)",
        "srgan": "SRGAN super-resolution (default: MNIST 8x8 → 32x32)",
    }[family]
    p = sub.add_parser(family, help=f"train a {doc}", description=f"Train a {doc}.")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--dataset", help="'mnist' (default), 'fake', or a folder of images")
    p.add_argument("--image-size", type=int, help="H = W, a power of two (default 32)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 grey (default) or 3 RGB")
    p.add_argument("--nz", type=int, help="latent size (default 100)")
    p.add_argument("--ngf", type=int, help="generator width")
    p.add_argument("--ndf", type=int, help="discriminator width")
    p.add_argument("--num-classes", type=int, help="cgan classes (a folder dataset sets this)")
    p.add_argument("--unet-depth", type=int, help="pix2pix downsamplings (default log2 size)")
    p.add_argument("--n-layers-d", type=int, help="pix2pix PatchGAN layers (default 3)")
    p.add_argument(
        "--loss",
        choices=LOSSES,
        help="adversarial loss (default vanilla, non-saturating; wgan-gp brings its own "
        "defaults: --d-norm none --n-critic 5 --lr 1e-4 --beta1 0 --beta2 0.9)",
    )
    p.add_argument("--gp-weight", type=float, help="wgan-gp gradient penalty weight (10)")
    p.add_argument("--n-critic", type=int, help="D updates per G update (1; wgan-gp 5)")
    p.add_argument(
        "--ema",
        type=float,
        help="decay of the moving average of G's weights that is evaluated and exported (0 = off)",
    )
    p.add_argument("--lambda-l1", type=float, help="pix2pix L1 weight (100); srgan content (1)")
    p.add_argument("--scale", type=int, choices=(2, 4), help="srgan upscaling factor (default 4)")
    p.add_argument("--residual-blocks", type=int, help="srgan residual blocks in G (default 8)")
    p.add_argument("--lambda-adv", type=float, help="srgan adversarial weight (default 1e-3)")
    p.add_argument("--lambda-feature", type=float, help="srgan classifier feature loss weight")
    p.add_argument("--d-norm", choices=D_NORMS, help="dcgan/cgan D normalisation")
    p.add_argument(
        "--mixed-batch",
        action=argparse.BooleanOptionalAction,
        help="dcgan/cgan: D judges real and fakes in one BatchNorm batch",
    )
    p.add_argument(
        "--mode-seeking", type=float, help="dcgan/cgan mode-seeking weight in G's loss (0 = off)"
    )
    p.add_argument("--kl-weight", type=float, help="vae: weight of the KL term (1)")
    p.add_argument(
        "--aux-weight", type=float, help="cgan: auxiliary classifier's weight in G's loss (0 = off)"
    )
    p.add_argument("--lr", type=float, help="Adam learning rate (default 2e-4)")
    p.add_argument("--beta1", type=float, help="Adam beta1 (default 0.5)")
    p.add_argument("--beta2", type=float, help="Adam beta2 (default 0.999)")
    p.add_argument("--batch-size", type=int, help="per process (default 64)")
    p.add_argument("--epochs", type=int, help="epochs to train in all (a resumed run included)")
    p.add_argument(
        "--decay-fraction", type=float, help="decay lr linearly to 0 over this last part of the run"
    )
    p.add_argument("--max-steps", type=int, help="stop after this many steps in all")
    p.add_argument("--seed", type=int, help="makes the run reproducible (default 0)")
    p.add_argument("--eval-samples", type=int, help="samples for the final evaluation (1000)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1")
    p.add_argument("--resume", type=Path, help="continue from this checkpoint.pt")
    p.add_argument("--dry-run", action="store_true", help="two steps on fake data, no evaluation")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--classifier", type=Path, help="digit classifier (trained there if missing)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="python -m ganserve.training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in FAMILIES:
        _add_train_parser(sub, family)
    ev = sub.add_parser("evaluate", help="evaluate a checkpoint; prints the JSON report")
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("--classifier", type=Path, help="digit classifier (trained there if missing)")
    ev.add_argument("--samples", type=int, default=1000)
    ev.add_argument(
        "--raw",
        action="store_true",
        help="judge the raw G of a run that kept a weight average (--ema), not the average",
    )
    cl = sub.add_parser(
        "classifier",
        help="train the two digit classifiers evaluation uses: the project's and the "
        "independent judge (judge.pt beside it)",
    )
    cl.add_argument("--out", type=Path, help="where to save it (default judges/classifier.pt)")
    return parser


def config_from_args(family: str, args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from flags: given flags, then the family's defaults, then TrainConfig's."""
    values: dict[str, object] = dict(FAMILY_DEFAULTS[family])
    if getattr(args, "loss", None) == "wgan-gp":
        values.update(WGAN_GP_DEFAULTS)
    if args.dry_run:
        values.update(DRY_RUN, dry_run=True)
    values.update({f: getattr(args, f) for f in _FIELDS if getattr(args, f, None) is not None})
    return TrainConfig(family=family, **values)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported here so that `--help` and argument errors answer without loading torch.
    from ganserve.training import trainer
    from ganserve.training.checkpoint import CheckpointError
    from ganserve.training.data import DatasetError

    classifier = (args.classifier or trainer.DEFAULT_CLASSIFIER) if "classifier" in args else None
    try:
        if args.command in FAMILIES:
            config = config_from_args(args.command, args)
            earlier = args.out / "checkpoint.pt"
            if earlier.exists() and args.resume is None:
                parser.error(
                    f"--out: {args.out} already holds a run; continue it with --resume {earlier}, "
                    "or remove the folder to start afresh"
                )
            result = trainer.train(
                config,
                args.out,
                device=args.device,
                resume=args.resume,
                classifier_path=classifier,
                run_evaluation=not args.no_eval,
                progress=not args.quiet,
            )
            if result.report is not None:
                print(json.dumps(result.report, indent=2))
            print(
                f"checkpoint: {result.checkpoint} (step {result.step}, epoch {result.epoch})",
                file=sys.stderr,
            )
        elif args.command == "evaluate":
            print(
                json.dumps(
                    evaluate_checkpoint(args.checkpoint, classifier, args.samples, raw=args.raw),
                    indent=2,
                )
            )
        else:
            from ganserve.training.classifier import load_or_train
            from ganserve.training.judge import beside, load_or_train_judge

            out = args.out or trainer.DEFAULT_CLASSIFIER
            if out.exists():
                parser.error(f"--out: {out} exists; remove it to train a new classifier")
            result = load_or_train(out)
            judge = load_or_train_judge(beside(out))
            print(
                json.dumps(
                    {
                        "classifier": str(out),
                        "held_out_accuracy": result.held_out_accuracy,
                        "judge": str(beside(out)),
                        "judge_held_out_accuracy": judge.held_out_accuracy,
                    }
                )
            )
    except (ConfigError, DatasetError, CheckpointError, ValueError) as exc:
        parser.error(str(exc))
    return 0


def evaluate_checkpoint(
    path: Path, classifier_path: Path, samples: int, *, raw: bool = False
) -> dict[str, object]:
    """The evaluation report of a saved generator, on the data it was trained on (`raw`: G's
    own weights, not their moving average)."""
    from ganserve.training import data
    from ganserve.training.checkpoint import load_generator
    from ganserve.training.evaluate import evaluate
    from ganserve.training.judge import judges_for

    netG, config, state = load_generator(path)
    if raw:
        netG.load_state_dict(state["netG"])
    train_split, held_split = data.load(config)
    classifier, judge = judges_for(config, classifier_path)
    return evaluate(netG, config, train_split, held_split, classifier, judge=judge, n=samples)
