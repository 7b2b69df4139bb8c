"""The independent judge as ONNX, with its reference statistics: what the server's quality
monitor (`server/quality.py`) scores served models with, without torch.

    python -m ganserve.export.judge [--judge judges/judge.pt] [--out judges/judge.onnx]

writes two files beside each other:

- `judge.onnx`: `image` uint8 NHWC [N, 32, 32, 1] (0-255, what the digit generators serve) →
  `features` float32 [N, 96] (the independent Frechet distance's feature space) and `logits`
  float32 [N, 10]. The graph converts the pixels to [-1, 1] NCHW, then runs `JudgeNet`.
- `judge.reference.npz`: `mean` [96] and `cov` [96, 96] of the judge's features of the 1,000
  held-out digits, and `real_vs_real`, the Frechet distance of as many train digits to them:
  the denominator of a Frechet ratio, as `training/evaluate.py` computes it for the cards.

Both come from the ONNX graph itself (the held-out digits go in as uint8), so the server's
figures and the reference share every step. The shipped files were made by this command from
the shipped `judges/judge.pt`; `tests/export/test_judge_onnx.py` checks they still agree.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ganserve.server.quality import frechet_from_stats, judge_features, reference_path, stats
from ganserve.training import data
from ganserve.training.classifier import CLASSIFIER_SIZE
from ganserve.training.config import TrainConfig
from ganserve.training.judge import load_or_train_judge

OPSET = 17


class _Uint8Judge(nn.Module):
    """uint8 NHWC 0-255 → (features, logits) of `JudgeNet`."""

    def __init__(self, judge: nn.Module) -> None:
        super().__init__()
        self.judge = judge

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.permute(0, 3, 1, 2).float() / 127.5 - 1
        features = self.judge.embed(x)
        return features, self.judge.head(features)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 1, H, W] in [-1, 1] → uint8 NHWC, rounded as a served model's output is."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()


def export(judge_path: Path, out: Path) -> dict[str, float]:
    """Write `out` and its reference statistics; return the reference's figures."""
    judge = load_or_train_judge(judge_path, progress=False).model.eval()
    example = torch.zeros(2, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 1, dtype=torch.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _Uint8Judge(judge),
            (example,),
            str(out),
            input_names=["image"],
            output_names=["features", "logits"],
            dynamic_axes={"image": {0: "n"}, "features": {0: "n"}, "logits": {0: "n"}},
            opset_version=OPSET,
            dynamo=False,
        )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    train, held = data.mnist(TrainConfig(family="dcgan", image_size=CLASSIFIER_SIZE))
    held_features, _ = judge_features(session, to_uint8(held.image))
    # as many train digits as there are held-out ones, drawn as training/evaluate.py does
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: len(held)]
    train_features, _ = judge_features(session, to_uint8(train.image[pick]))
    mean, cov = stats(held_features)
    real_vs_real = frechet_from_stats(*stats(train_features), mean, cov)
    np.savez(reference_path(out), mean=mean, cov=cov, real_vs_real=np.float64(real_vs_real))
    return {"held_out": len(held), "real_vs_real": round(real_vs_real, 4)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.export.judge", description=__doc__)
    p.add_argument("--judge", type=Path, default=Path("judges/judge.pt"))
    p.add_argument("--out", type=Path, default=Path("judges/judge.onnx"))
    args = p.parse_args(argv)
    figures = export(args.judge, args.out)
    print(f"wrote {args.out} and {reference_path(args.out)}: {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
