"""The standard DCGAN 64x64x3 generator (nz 100, ngf 64) for GPU benchmarks, random weights.

    python -m bench.make_dcgan64 --repository runs/bench-models [--fp16]

Builds netG with the project's own code, saves a checkpoint, and exports it with the
project's own export (uint8 head, verified against PyTorch) as `dcgan64/1/model.onnx`.
Speed does not depend on the weights, so no training is needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ganserve.export.onnx_export import export_checkpoint
from ganserve.training import checkpoint
from ganserve.training.config import TrainConfig
from ganserve.training.families import build_generator
from ganserve.training.gan import weights_init


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repository", type=Path, default=Path("runs/bench-models"))
    p.add_argument("--fp16", action="store_true", help="also export model.fp16.onnx")
    args = p.parse_args()
    config = TrainConfig(family="dcgan", dataset="fake", image_size=64, channels=3, ngf=64, ndf=64)
    torch.manual_seed(0)
    netG = build_generator(config)
    netG.apply(weights_init)
    ckpt = args.repository / "dcgan64.pt"
    checkpoint.save(
        ckpt,
        {
            "family": "dcgan",
            "config": config.to_dict(),
            "step": 0,
            "epoch": 0,
            "netG": netG.state_dict(),
        },
    )
    out = args.repository / "dcgan64" / "1"
    results = [export_checkpoint(ckpt, out / "model.onnx")]
    if args.fp16:
        results.append(export_checkpoint(ckpt, out / "model.fp16.onnx", fp16=True))
    for r in results:
        print(f"{r.path}: {r.card.precision}, max error vs PyTorch {max(r.max_error.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
