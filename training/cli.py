"""`python -m ganserve.training {dcgan,...,cyclegan,evaluate,classifier}`: train,
evaluate, judge."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ganserve.training.config import DRY_RUN, FAMILIES, WGAN_GP_DEFAULTS, ConfigError, TrainConfig

_DOC = {
    "dcgan": "unconditional DCGAN",
    "cgan": "class-conditional GAN",
    "pix2pix": "pix2pix image translation (default: MNIST edges → digits)",
    "vae": "variational autoencoder (its decoder is served as an unconditional generator)",
    "srgan": "SRGAN super-resolution (default: MNIST 8x8 → 32x32)",
    "inpaint": "inpainting: fill holes (default: MNIST with rectangles and strokes cut out)",
    "cyclegan": "CycleGAN unpaired translation (default: MNIST digits → ink-on-paper digits)",
}


_NO_VALUE = (
    "cgan: skip the CAS and augmentation gain (three seeds of six small classifiers, ~10 min "
    "on one thread)"
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)  # 0.0004, not 0.00040000


def _as_flags(values: dict[str, object]) -> str:
    """Settings as the flags that give them: "--d-norm none --n-critic 5 --no-mixed-batch"."""
    return " ".join(_as_flag(name, value) for name, value in values.items())


def _as_flag(name: str, value: object) -> str:
    if isinstance(value, bool):
        return _flag(name) if value else "--no-" + _flag(name)[2:]
    return f"{_flag(name)} {_shown(value)}"


def add_config_arguments(parser: argparse.ArgumentParser, family: str) -> None:
    """One flag per TrainConfig field: its help and argparse extras from the field's metadata,
    its type from the field's default, and the family's recipe shown as the default. Every flag
    parses to None when left out, so `config_from_args` knows which were given."""
    recipe = TrainConfig.for_family(family)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "family":
            continue
        extras = {k: v for k, v in f.metadata.items() if k != "help"}
        text = f.metadata["help"]
        if f.name == "loss":
            text += f"; wgan-gp brings its own defaults: {_as_flags(WGAN_GP_DEFAULTS)}"
        if f.name == "dry_run":
            text += f" ({_as_flags(DRY_RUN)})"
        else:
            text += f" (default {_shown(getattr(recipe, f.name))})"
        if "action" not in extras:
            if isinstance(f.default, bool):
                extras["action"] = argparse.BooleanOptionalAction
            else:
                extras["type"] = type(f.default)
        parser.add_argument(_flag(f.name), default=None, help=text, **extras)


def _add_train_parser(sub: argparse._SubParsersAction, family: str) -> None:
    doc = _DOC[family]
    p = sub.add_parser(family, help=f"train a {doc}", description=f"Train a {doc}.")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    add_config_arguments(p, family)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1")
    p.add_argument("--resume", type=Path, help="continue from this checkpoint.pt")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--no-value", action="store_true", help=_NO_VALUE)
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
    ev.add_argument("--no-value", action="store_true", help=_NO_VALUE)
    cl = sub.add_parser(
        "classifier",
        help="train the two digit classifiers evaluation uses: the project's and the "
        "independent judge (judge.pt beside it)",
    )
    cl.add_argument("--out", type=Path, help="where to save it (default judges/classifier.pt)")
    return parser


def config_from_args(family: str, args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from flags: the flags given, over the family's recipe (`for_family`)."""
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name != "family" and getattr(args, f.name, None) is not None
    }
    return TrainConfig.for_family(family, **given)


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
                measure_value=not args.no_value,
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
                    evaluate_checkpoint(
                        args.checkpoint,
                        classifier,
                        args.samples,
                        raw=args.raw,
                        value=not args.no_value,
                    ),
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
    path: Path, classifier_path: Path, samples: int, *, raw: bool = False, value: bool = True
) -> dict[str, object]:
    """The evaluation report of a saved generator, on the data it was trained on (`raw`: G's
    own weights, not their moving average; `value`: a cgan's CAS and augmentation gain)."""
    from ganserve.training import data
    from ganserve.training.cas import ValueRecipe
    from ganserve.training.checkpoint import load_generator
    from ganserve.training.evaluate import evaluate
    from ganserve.training.judge import judges_for

    netG, config, state = load_generator(path)
    if raw:
        netG.load_state_dict(state["netG"])
    train_split, held_split = data.load(config)
    classifier, judge = judges_for(config, classifier_path)
    recipe = ValueRecipe() if value else None
    return evaluate(
        netG, config, train_split, held_split, classifier, judge=judge, n=samples, value=recipe
    )
