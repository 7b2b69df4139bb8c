"""The value of a conditional generator's digits: CAS and augmentation gain, as a table.

    python -m bench.augment [models/mnist-cgan/1/model.onnx | runs/cgan-mnist/checkpoint.pt]
    python -m bench.augment --from models/mnist-cgan/1/evaluation.json   # the stored figures

Trains the fixed CAS classifier (`ganserve.training.cas`) on 10,000 generated digits, on the
4,000 real training digits, and on k real digits per class with and without the generated
ones, for each seed, and tests each on the 1,000 held-out real digits: about 10 min on one
thread of the 2-core VM for three seeds. `--json` also writes the measured block.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from torch import nn

from ganserve.training import data
from ganserve.training.cas import ValueRecipe, measure_value, value_table
from ganserve.training.config import TrainConfig

SHIPPED = Path("models/mnist-cgan/1/model.onnx")


def load(path: Path) -> tuple[nn.Module, TrainConfig]:
    """The generator (ONNX Runtime or PyTorch) at `path` and the config it was trained with."""
    if path.suffix == ".onnx":
        from ganserve.export.evaluate import OnnxGenerator

        netG = OnnxGenerator(path, threads=1)
        return netG, TrainConfig.from_dict(netG.card.provenance["config"])
    from ganserve.training.checkpoint import load_generator

    netG, config, _ = load_generator(path)
    return netG, config


def machine() -> str:
    """The CPU model and how many cores this process may use."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def stored(path: Path) -> dict[str, Any]:
    """The value block of a report.json or evaluation.json."""
    report = json.loads(path.read_text())
    if "value" not in report:
        raise SystemExit(f"{path}: no value block (measured for conditional models only)")
    return report["value"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", type=Path, nargs="?", default=SHIPPED, help="model.onnx or .pt")
    p.add_argument("--from", dest="report", type=Path, help="print a stored report's table")
    p.add_argument("--seeds", type=int, default=len(ValueRecipe().seeds))
    p.add_argument("--steps", type=int, default=ValueRecipe().steps)
    p.add_argument("--json", type=Path, help="also write the measured block here")
    args = p.parse_args(argv)
    if args.report is not None:
        print(value_table(stored(args.report)))
        return 0
    netG, config = load(args.model)
    if config.family != "cgan":
        raise SystemExit(f"{args.model}: a {config.family} generator; CAS needs a conditional one")
    train, held = data.load(config)
    recipe = ValueRecipe(seeds=tuple(range(args.seeds)), steps=args.steps)
    value = measure_value(netG, config, train, held, recipe)
    print(f"{args.model}, measured on {machine()}")
    print(value_table(value))
    if args.json is not None:
        args.json.write_text(json.dumps(value, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
