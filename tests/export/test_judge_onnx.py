"""The shipped ONNX judge (judges/judge.onnx) and its reference statistics: the quality
monitor's instrument agrees with the torch judge every card was measured with, and
`python -m ganserve.export.judge` makes the same files again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ganserve.export import judge as judge_export
from ganserve.server import quality
from ganserve.training import data
from ganserve.training.classifier import CLASSIFIER_SIZE
from ganserve.training.config import TrainConfig
from ganserve.training.judge import load_or_train_judge

JUDGES = Path(__file__).resolve().parents[2] / "judges"


def test_the_onnx_judge_sees_what_the_torch_judge_sees() -> None:
    _, held = data.mnist(TrainConfig(family="dcgan", image_size=CLASSIFIER_SIZE))
    pixels = judge_export.to_uint8(held.image[:300])
    session = ort.InferenceSession(str(JUDGES / "judge.onnx"), providers=["CPUExecutionProvider"])
    features, predicted = quality.judge_features(session, pixels)
    net = load_or_train_judge(JUDGES / "judge.pt", progress=False).model.eval()
    with torch.no_grad():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
        want = net.embed(x)
        want_predicted = net.head(want).argmax(1).numpy()
    np.testing.assert_allclose(features, want.numpy(), rtol=1e-4, atol=1e-4)
    assert (predicted == want_predicted).mean() == 1.0
    assert (predicted == held.label[:300].numpy()).mean() > 0.97  # it reads digits


def test_the_export_remakes_the_shipped_files(tmp_path: Path) -> None:
    figures = judge_export.export(JUDGES / "judge.pt", tmp_path / "judge.onnx")
    assert figures["held_out"] == 1000
    with (
        np.load(quality.reference_path(JUDGES / "judge.onnx")) as shipped,
        np.load(quality.reference_path(tmp_path / "judge.onnx")) as made,
    ):
        np.testing.assert_allclose(made["mean"], shipped["mean"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(made["cov"], shipped["cov"], rtol=1e-4, atol=1e-6)
        assert abs(float(made["real_vs_real"]) - float(shipped["real_vs_real"])) < 1e-4
        # the same denominator as the cards' Frechet ratios (training/evaluate.py, torch)
        assert abs(float(shipped["real_vs_real"]) - 0.0982) < 5e-4
