"""Export: ONNX Runtime runs what PyTorch trained, with the model card in the file."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ganserve.export.__main__ import main as export_main
from ganserve.export.metadata import ModelCard, ModelCardError, TensorSpec, example_inputs
from ganserve.export.onnx_export import ExportError, ServingHead, export_checkpoint, verify
from ganserve.export.repository import RepositoryError, read_serving_config
from ganserve.training import checkpoint
from ganserve.training.config import TrainConfig
from ganserve.training.trainer import train

KINDS = {
    "dcgan": "unconditional",
    "cgan": "conditional",
    "pix2pix": "translation",
    "vae": "unconditional",
    "srgan": "translation",
    "inpaint": "translation",
    "cyclegan": "translation",
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One briefly trained checkpoint per family (fake data, 2 steps, narrow nets)."""
    paths = {}
    for family in KINDS:
        out = tmp_path_factory.mktemp(family)
        config = TrainConfig(
            family=family, dataset="fake", ngf=8, ndf=8, batch_size=16, max_steps=2, seed=1
        )
        run = train(config, out, device="cpu", run_evaluation=False, progress=False)
        paths[family] = run.checkpoint
    return paths


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def card_of(path: Path) -> ModelCard:
    return ModelCard.from_props(session(path).get_modelmeta().custom_metadata_map)


@pytest.mark.parametrize("family", list(KINDS))
def test_export_runs_in_onnx_runtime_with_its_card(
    family: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    result = export_checkpoint(checkpoints[family], tmp_path / "model.onnx")
    card = card_of(result.path)
    assert card == result.card
    assert card.kind == KINDS[family]
    assert card.output.dtype == "uint8" and card.output.layout == "NHWC"
    assert card.pixel_range == (0.0, 255.0)
    assert card.provenance["family"] == family and card.provenance["steps"] == 2
    assert len(card.provenance["checkpoint_sha256"]) == 64
    # parity was checked at batch 1 and 7 (and two sizes for translation)
    assert len(result.max_error) == (4 if KINDS[family] == "translation" else 2)
    assert max(result.max_error.values()) <= 1
    feeds = example_inputs(card, batch=5)
    (out,) = session(result.path).run(None, feeds)
    assert out.dtype == np.uint8 and out.shape == (5, 32, 32, 1)
    assert [i.name for i in session(result.path).get_inputs()] == [s.name for s in card.inputs]
    if family == "cgan":
        assert card.latent_size == 100 and card.num_classes == 10
        assert card.class_names == tuple(str(i) for i in range(10))
    if family == "dcgan":
        assert card.latent_size == 100 and card.num_classes == 0
    if family == "pix2pix":
        assert card.size_multiple == 32 and card.latent_size == 0 and card.scale == 1
    if family == "inpaint":  # a mask beside the image, and what is outside it unchanged
        assert card.takes_mask and card.size_multiple == 32
        assert [s.name for s in card.inputs] == ["image", "mask"]
        keep = feeds["mask"] == 0
        assert np.array_equal(np.broadcast_to(keep, out.shape) * out,
                              np.broadcast_to(keep, out.shape) * feeds["image"])  # fmt: skip
    if family == "srgan":  # 8x8 sources (the trained size) → 32x32
        assert card.size_multiple == 1 and card.scale == 4 and card.input_size == (8, 8)


def test_translation_runs_at_other_sizes(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    result = export_checkpoint(checkpoints["pix2pix"], tmp_path / "model.onnx")
    netG, _, _ = checkpoint.load_generator(checkpoints["pix2pix"])
    head = ServingHead(netG, "translation", uint8=True).eval()
    for h, w in [(32, 32), (64, 96)]:
        feeds = example_inputs(result.card, batch=3, size=(h, w), seed=h + w)
        (out,) = session(result.path).run(None, feeds)
        assert out.shape == (3, h, w, 1)
        with torch.no_grad():
            want = head(torch.from_numpy(feeds["image"])).numpy()
        assert np.abs(out.astype(int) - want.astype(int)).max() <= 1


def test_super_resolution_output_is_scale_times_the_input(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    result = export_checkpoint(checkpoints["srgan"], tmp_path / "model.onnx")
    assert "batch 7, 16x8 -> 64x32" in result.max_error  # verified taller than trained
    netG, _, _ = checkpoint.load_generator(checkpoints["srgan"])
    head = ServingHead(netG, "translation", uint8=True).eval()
    for h, w in [(8, 8), (5, 7), (24, 40)]:
        feeds = example_inputs(result.card, batch=2, size=(h, w), seed=h * w)
        (out,) = session(result.path).run(None, feeds)
        assert out.shape == (2, 4 * h, 4 * w, 1)
        with torch.no_grad():
            want = head(torch.from_numpy(feeds["image"])).numpy()
        assert np.abs(out.astype(int) - want.astype(int)).max() <= 1
    floats = export_checkpoint(checkpoints["srgan"], tmp_path / "f.onnx", uint8=False)
    (out,) = session(floats.path).run(None, example_inputs(floats.card, batch=1, size=(3, 5)))
    assert out.shape == (1, 1, 12, 20) and out.dtype == np.float32


def test_float_option_keeps_nchw_in_minus_one_to_one(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    result = export_checkpoint(checkpoints["cgan"], tmp_path / "f.onnx", uint8=False)
    assert result.card.pixel_range == (-1.0, 1.0)
    assert max(result.max_error.values()) <= 1e-4
    (out,) = session(result.path).run(None, example_inputs(result.card, batch=2))
    assert out.dtype == np.float32 and out.shape == (2, 1, 32, 32)
    assert out.min() >= -1 and out.max() <= 1


def test_fp16_variant_is_measured_against_full_precision(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    result = export_checkpoint(checkpoints["dcgan"], tmp_path / "h.onnx", fp16=True)
    assert result.card.precision == "fp16"
    assert max(result.max_error.values()) <= 2  # levels, against the fp32 generator
    fp32 = export_checkpoint(checkpoints["dcgan"], tmp_path / "s.onnx")
    assert result.path.stat().st_size < 0.6 * fp32.path.stat().st_size


def test_drift_between_onnx_and_pytorch_fails_the_check(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    result = export_checkpoint(checkpoints["dcgan"], tmp_path / "model.onnx")
    netG, _, _ = checkpoint.load_generator(checkpoints["dcgan"])
    with torch.no_grad():
        netG.main[-2].weight.add_(0.5)  # PyTorch no longer matches what was exported
    with pytest.raises(ExportError, match="differ by"):
        verify(result.path, ServingHead(netG, "unconditional", uint8=True).eval(), result.card)


def test_a_checkpoint_that_does_not_match_its_config_is_refused(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    state = checkpoint.load(checkpoints["dcgan"])
    state["config"]["ngf"] = 16  # the weights were trained with ngf 8
    bad = tmp_path / "bad.pt"
    checkpoint.save(bad, {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(checkpoint.CheckpointError, match="do not match"):
        export_checkpoint(bad, tmp_path / "model.onnx")
    assert not list(tmp_path.glob("*.onnx*"))  # nothing half-written left behind


def test_cli_adds_versions_and_reports_errors(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "models"
    args = [str(checkpoints["cgan"]), "--name", "digits", "--repository", str(repo)]
    assert export_main(args) == 0
    assert export_main([*args, "--fp16"]) == 0
    assert (repo / "digits" / "1" / "model.onnx").is_file()
    assert (repo / "digits" / "2" / "model.fp16.onnx").is_file()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["precision"] for line in lines] == ["fp32", "fp32", "fp16"]

    assert (
        export_main([str(tmp_path / "missing.pt"), "--name", "digits", "--repository", str(repo)])
        == 1
    )
    assert "no such checkpoint file" in capsys.readouterr().err
    assert not (repo / "digits" / "3").exists()  # a failed export leaves no version behind
    assert (
        export_main([str(checkpoints["cgan"]), "--name", "Bad Name!", "--repository", str(repo)])
        == 1
    )
    assert "model name" in capsys.readouterr().err


def test_model_card_round_trip_and_errors() -> None:
    card = ModelCard(
        kind="conditional",
        inputs=(),
        output=_spec(),
        height=32,
        width=32,
        channels=1,
        latent_size=100,
        num_classes=2,
        class_names=("cat", "dog"),
        provenance={"steps": 3},
    )
    props = card.to_props()
    assert ModelCard.from_props(props) == card
    del props["ganserve.kind"]
    with pytest.raises(ModelCardError, match=r"ganserve\.kind: missing"):
        ModelCard.from_props(props)
    with pytest.raises(ModelCardError, match="class_names"):
        dataclasses.replace(card, num_classes=3)  # two names for three classes
    with pytest.raises(ModelCardError, match="scale"):
        dataclasses.replace(card, scale=4)  # upscaling is for translation models only


def test_model_card_scale_round_trips_and_defaults_to_one() -> None:
    card = ModelCard(
        kind="translation",
        inputs=(TensorSpec("image", "uint8", (-1, -1, -1, 1), "NHWC"),),
        output=TensorSpec("image_out", "uint8", (-1, -1, -1, 1), "NHWC"),
        height=32,
        width=32,
        channels=1,
        scale=4,
    )
    props = card.to_props()
    assert props["ganserve.scale"] == "4" and ModelCard.from_props(props) == card
    assert card.input_size == (8, 8) and card.output_size(5, 6) == (20, 24)
    del props["ganserve.scale"]  # a card written before super-resolution
    assert ModelCard.from_props(props) == dataclasses.replace(card, scale=1)


def _spec() -> TensorSpec:
    return TensorSpec("image_out", "uint8", (-1, 32, 32, 1), "NHWC")


def test_serving_config_is_optional_and_strict(tmp_path: Path) -> None:
    assert read_serving_config(tmp_path).max_batch_size is None
    (tmp_path / "config.json").write_text('{"max_batch_size": 32, "precision": "fp16"}')
    config = read_serving_config(tmp_path)
    assert config.max_batch_size == 32 and config.model_file == "model.fp16.onnx"
    (tmp_path / "config.json").write_text('{"max_batch": 32}')
    with pytest.raises(RepositoryError, match="unknown keys"):
        read_serving_config(tmp_path)
    (tmp_path / "config.json").write_text('{"max_batch_size": 0}')
    with pytest.raises(RepositoryError, match="positive integer"):
        read_serving_config(tmp_path)
    (tmp_path / "config.json").write_text('{"instances": 3, "intra_op_threads": 1}')
    config = read_serving_config(tmp_path)
    assert (config.instances, config.intra_op_threads) == (3, 1)
    (tmp_path / "config.json").write_text('{"instances": 0}')
    with pytest.raises(RepositoryError, match="instances must be a positive integer"):
        read_serving_config(tmp_path)


@pytest.mark.parametrize(
    ("policy", "ok"),
    [
        ('"all"', True),
        ('{"latest": 2}', True),
        ('{"specific": [1, 3]}', True),
        ('{"latest": 0}', False),
        ('{"latest": true}', False),
        ('{"specific": [0]}', False),
        ('{"latest": 1, "specific": [1]}', False),
        ('"newest"', False),
    ],
)
def test_version_policies_are_checked(tmp_path: Path, policy: str, ok: bool) -> None:
    (tmp_path / "config.json").write_text(f'{{"version_policy": {policy}}}')
    if ok:
        assert read_serving_config(tmp_path).version_policy is not None
    else:
        with pytest.raises(RepositoryError, match="version_policy must be"):
            read_serving_config(tmp_path)


def test_record_value_writes_the_card_and_leaves_the_graph(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from ganserve.export.evaluate import record_value

    path = export_checkpoint(checkpoints["cgan"], tmp_path / "model.onnx").path
    before = card_of(path)
    model = onnx.load(str(path))
    record_value(path, {"cas_ratio": 0.9})
    after = card_of(path)
    assert after.provenance["evaluation"]["value"] == {
        "cas_ratio": 0.9,
        "measured_on": "onnxruntime, after export",
    }
    assert {k: v for k, v in after.provenance.items() if k != "evaluation"} == {
        k: v for k, v in before.provenance.items() if k != "evaluation"
    }
    assert dataclasses.replace(after, provenance=before.provenance) == before
    recorded = onnx.load(str(path))
    assert recorded.graph.SerializeToString() == model.graph.SerializeToString()
    assert [p.key for p in recorded.metadata_props] == [p.key for p in model.metadata_props]
    changed = {(p.key, p.value) for p in recorded.metadata_props} - {
        (p.key, p.value) for p in model.metadata_props
    }
    assert [key for key, _ in changed] == ["ganserve.provenance"]
    assert not list(tmp_path.glob("*.tmp"))
