"""Judge an exported model through ONNX Runtime with the training evaluation (the shipped models'
quality bar holds for what the server runs, not only for the PyTorch checkpoint).

`python -m ganserve.export.evaluate models/mnist-cgan/1/model.onnx` prints the JSON report; for a
conditional model it includes the value of its images (CAS and augmentation gain, `value`;
~10 min on one thread, `--no-value` skips it), and `--card` also writes that block into the
model card of the file (and of its fp16 sibling), the graph untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ganserve.contract import MASK_FILL
from ganserve.export.metadata import PREFIX, ModelCard
from ganserve.tensor import to_uint8, to_unit
from ganserve.training import data
from ganserve.training.cas import ValueRecipe
from ganserve.training.config import TrainConfig
from ganserve.training.evaluate import evaluate
from ganserve.training.judge import judges_for
from ganserve.training.trainer import DEFAULT_CLASSIFIER


class OnnxGenerator(nn.Module):
    """An ONNX model behind netG's interface: float tensors in [-1, 1] NCHW in and out."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.card = ModelCard.from_props(self.session.get_modelmeta().custom_metadata_map)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds: dict[str, np.ndarray] = {}
        for spec, x in zip(self.card.inputs, inputs, strict=True):
            value = x.cpu().numpy()
            if spec.name == "image" and spec.dtype == "uint8":  # [-1, 1] NCHW → uint8 NHWC
                value = to_uint8(value)
                value = value.transpose(0, 2, 3, 1)
            if spec.name == "mask" and spec.dtype == "uint8":  # {0, 1} NCHW → 0 / 255 NHWC
                value = (value.transpose(0, 2, 3, 1) > 0).astype(np.uint8) * MASK_FILL
            feeds[spec.name] = value.astype(spec.dtype, copy=False)
        out = self.session.run(None, feeds)[0]
        if self.card.uint8_output:
            out = to_unit(out.transpose(0, 3, 1, 2))
        return torch.from_numpy(np.ascontiguousarray(out))


def evaluate_onnx(
    path: str | Path,
    *,
    classifier_path: str | Path = DEFAULT_CLASSIFIER,
    n: int = 1000,
    value: ValueRecipe | None = None,
) -> dict[str, Any]:
    """The training report for the ONNX model at `path`, on the data it was trained on (with
    `value`, a conditional model's CAS and augmentation gain measured with that recipe)."""
    netG = OnnxGenerator(path)
    config = TrainConfig.from_dict(netG.card.provenance["config"])
    train, held = data.load(config)
    classifier, judge = judges_for(config, classifier_path, progress=False)
    return evaluate(netG, config, train, held, classifier, judge=judge, n=n, value=value)


def record_value(path: str | Path, value: dict[str, Any]) -> None:
    """Put `value` into the model card of the ONNX file at `path` (provenance.evaluation.value,
    marked as measured through ONNX Runtime); the graph and every other key stay as they were."""
    path = Path(path)
    model = onnx.load(str(path))
    card = ModelCard.from_props({p.key: p.value for p in model.metadata_props})
    evaluation = dict(card.provenance.get("evaluation") or {})
    evaluation["value"] = {**value, "measured_on": "onnxruntime, after export"}
    card = dataclasses.replace(card, provenance={**card.provenance, "evaluation": evaluation})
    key = PREFIX + "provenance"
    (prop,) = (p for p in model.metadata_props if p.key == key)
    prop.value = card.to_props()[key]
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.export.evaluate", description=__doc__)
    p.add_argument("model", type=Path, help="an exported model.onnx")
    p.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--no-value", action="store_true", help="skip CAS and augmentation gain")
    p.add_argument(
        "--card",
        action="store_true",
        help="write the value block into the model's card (and model.fp16.onnx's beside it)",
    )
    args = p.parse_args(argv)
    recipe = None if args.no_value else ValueRecipe()
    report = evaluate_onnx(
        args.model, classifier_path=args.classifier, n=args.samples, value=recipe
    )
    if args.card and "value" in report:
        for path in (args.model, args.model.with_suffix(".fp16.onnx")):
            if path.is_file():
                record_value(path, report["value"])
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
