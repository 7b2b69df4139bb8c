"""Checkpoint → ONNX: a serving head in the graph, the model card in its metadata, and a parity
check of ONNX Runtime against PyTorch that fails the export when they drift.

The serving head maps the generator's [-1, 1] NCHW float output to uint8 NHWC inside the graph
(4x fewer bytes off the GPU, no post-processing in the server); translation models take their
source image as uint8 NHWC the same way. `uint8=False` keeps float32 NCHW in [-1, 1].
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ganserve.export.metadata import ModelCard, TensorSpec, example_inputs
from ganserve.training.checkpoint import load_generator
from ganserve.training.config import TrainConfig

OPSET = 17
KIND_OF_FAMILY = {
    "dcgan": "unconditional",
    "cgan": "conditional",
    "pix2pix": "translation",
    "vae": "unconditional",  # the decoder: z -> image
    "srgan": "translation",  # super-resolution: the output `scale` times the input
    "inpaint": "translation",  # image and mask → the image with its holes filled
    "cyclegan": "translation",  # G_AB: domain A → domain B (unpaired training)
}
_UNETS = ("pix2pix", "inpaint", "cyclegan")  # a U-Net: sizes must be multiples of 2^depth
FLOAT_TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| for float outputs in [-1, 1]
UINT8_TOLERANCE = 1  # max difference in levels for uint8 outputs (rounding at .5 may differ)
# fp16 variants are compared with the fp32 generator: their error is the price of half precision.
FP16_FLOAT_TOLERANCE = 2e-2
FP16_UINT8_TOLERANCE = 2


class ExportError(RuntimeError):
    """The export failed or its verification did not pass; the message says which check."""


class ServingHead(nn.Module):
    """netG as served: uint8 NHWC image out (and in, for translation) when `uint8`."""

    def __init__(self, netG: nn.Module, kind: str, *, uint8: bool, fp16: bool = False) -> None:
        super().__init__()
        self.netG = netG.half() if fp16 else netG
        self.kind, self.uint8, self.fp16 = kind, uint8, fp16

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.kind == "translation" and self.uint8:
            image, *mask = inputs  # inpainting: a uint8 mask [N, H, W, 1], nonzero = fill
            inputs = (image.permute(0, 3, 1, 2).float() / 127.5 - 1.0,)
            inputs += tuple((m.permute(0, 3, 1, 2) > 0).float() for m in mask)
        if self.fp16:
            inputs = tuple(x.half() if x.is_floating_point() else x for x in inputs)
        out = self.netG(*inputs).float()
        if not self.uint8:
            return out
        # [-1, 1] → [0, 255], rounded to the nearest level, NCHW → NHWC
        pixels = ((out + 1.0) * 127.5).round().clamp(0.0, 255.0).to(torch.uint8)
        return pixels.permute(0, 2, 3, 1)


@dataclass(frozen=True)
class ExportResult:
    """Where the model went, its card, and the verification's measured errors."""

    path: Path
    card: ModelCard
    max_error: dict[str, float]  # "batch 7, 32x32" → max |ORT - PyTorch| (levels for uint8)


def _input_specs(config: TrainConfig, kind: str, uint8: bool) -> tuple[TensorSpec, ...]:
    c = config
    if kind == "translation":
        if uint8:
            image = TensorSpec("image", "uint8", (-1, -1, -1, c.channels), "NHWC")
            mask = TensorSpec("mask", "uint8", (-1, -1, -1, 1), "NHWC")
        else:
            image = TensorSpec("image", "float32", (-1, c.channels, -1, -1), "NCHW")
            mask = TensorSpec("mask", "float32", (-1, 1, -1, -1), "NCHW")
        return (image, mask) if c.family == "inpaint" else (image,)
    z = TensorSpec("z", "float32", (-1, c.nz), "NC")
    if kind == "conditional":
        return (z, TensorSpec("label", "int64", (-1,), "N"))
    return (z,)


# ONNX forbids an input and an output of one name (translation takes `image`), hence:
OUTPUT_NAME = "image_out"
_AXIS_NAMES = {"N": "batch", "H": "height", "W": "width"}


def _output_spec(config: TrainConfig, kind: str, uint8: bool) -> TensorSpec:
    c = config
    h = w = -1 if kind == "translation" else c.image_size
    if uint8:
        return TensorSpec(OUTPUT_NAME, "uint8", (-1, h, w, c.channels), "NHWC")
    return TensorSpec(OUTPUT_NAME, "float32", (-1, c.channels, h, w), "NCHW")


def dynamic_axes(card: ModelCard) -> dict[str, dict[int, str]]:
    """The dynamic axes of every graph input and output: the -1 dimensions of the card."""
    return {
        spec.name: {i: _AXIS_NAMES[spec.layout[i]] for i, d in enumerate(spec.shape) if d == -1}
        for spec in (*card.inputs, card.output)
    }


def source_commit() -> str:
    """The git commit of the code that exports (with -dirty if the tree has changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_card(
    config: TrainConfig, state: dict[str, Any], *, uint8: bool, fp16: bool, checkpoint: Path
) -> ModelCard:
    """The card for a generator trained with `config` (state: the loaded checkpoint)."""
    kind = KIND_OF_FAMILY[config.family]
    names = tuple(state.get("class_names") or ())
    if kind == "conditional" and len(names) != config.num_classes:
        names = tuple(str(i) for i in range(config.num_classes))
    evaluation = {
        k: v
        for k, v in (state.get("evaluation") or {}).items()
        if k not in ("family", "dataset", "step", "epoch")
    }
    return ModelCard(
        kind=kind,  # type: ignore[arg-type]
        inputs=_input_specs(config, kind, uint8),
        output=_output_spec(config, kind, uint8),
        height=config.image_size,
        width=config.image_size,
        channels=config.channels,
        latent_size=config.nz if kind != "translation" else 0,
        num_classes=config.num_classes if kind == "conditional" else 0,
        class_names=names if kind == "conditional" else (),
        size_multiple=2**config.depth if config.family in _UNETS else 1,
        scale=config.scale if config.family == "srgan" else 1,
        pixel_range=(0.0, 255.0) if uint8 else (-1.0, 1.0),
        precision="fp16" if fp16 else "fp32",
        provenance={
            "family": config.family,
            "dataset": config.dataset,
            "steps": int(state.get("step", 0)),
            "epochs": int(state.get("epoch", 0)),
            "config": config.to_dict(),
            "evaluation": evaluation,
            "source_commit": source_commit(),
            "checkpoint_sha256": _sha256(checkpoint),
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "torch_version": str(torch.__version__),
            "opset": OPSET,
        },
    )


def _torch_reference(head: ServingHead, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return head(*(torch.from_numpy(v) for v in feeds.values())).numpy()


def verify(path: Path, head: ServingHead, card: ModelCard) -> dict[str, float]:
    """onnx.checker, then ONNX Runtime against PyTorch at batch 1 and 7 (and two sizes for
    translation). Returns the max error per case; raises ExportError past the tolerance.

    `head` is the fp32 model in PyTorch, also for an fp16 export: its error is measured
    against full precision."""
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: onnx.checker rejected the graph: {exc}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    sizes: list[tuple[int, int] | None] = [None]
    if card.kind == "translation":
        m, (h, w) = card.size_multiple, card.input_size
        sizes.append((max(m, h) * 2, max(m, w)))  # taller than trained
    tolerance = UINT8_TOLERANCE if card.uint8_output else FLOAT_TOLERANCE
    if card.precision == "fp16":
        tolerance = FP16_UINT8_TOLERANCE if card.uint8_output else FP16_FLOAT_TOLERANCE
    errors: dict[str, float] = {}
    for size in sizes:
        for batch in (1, 7):
            feeds = example_inputs(card, batch, size, seed=batch)
            got = session.run(None, feeds)[0]
            want = _torch_reference(head, feeds)
            if got.shape != want.shape or got.dtype != want.dtype:
                raise ExportError(
                    f"{path}: ONNX Runtime returned {got.dtype}{list(got.shape)}, PyTorch "
                    f"{want.dtype}{list(want.shape)}"
                )
            error = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
            h, w = size or card.input_size
            case = f"batch {batch}, {h}x{w}"
            if card.kind == "translation":
                out_h, out_w = card.output_size(h, w)
                got_h, got_w = got.shape[1:3] if card.uint8_output else got.shape[2:4]
                if (got_h, got_w) != (out_h, out_w):
                    raise ExportError(
                        f"{path}: a {h}x{w} source gave {got_h}x{got_w}, the card says "
                        f"{out_h}x{out_w} (scale {card.scale})"
                    )
                if card.scale > 1:
                    case += f" -> {out_h}x{out_w}"
            errors[case] = error
            if error > tolerance:
                raise ExportError(
                    f"{path}: ONNX Runtime and PyTorch differ by {error:g} at {case} "
                    f"(tolerance {tolerance:g}{' levels' if card.uint8_output else ''})"
                )
    return errors


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, *, uint8: bool = True, fp16: bool = False
) -> ExportResult:
    """Export the generator in `checkpoint` to the ONNX file `out`, then verify it.

    The file is written beside `out` under a temporary name and renamed only once it
    passed verification, so a failed export never leaves a model the server would load.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    netG, config, state = load_generator(checkpoint)
    kind = KIND_OF_FAMILY[config.family]
    card = model_card(config, state, uint8=uint8, fp16=fp16, checkpoint=checkpoint)
    head = ServingHead(netG, kind, uint8=uint8).eval()
    exported = ServingHead(copy.deepcopy(netG), kind, uint8=uint8, fp16=True) if fp16 else head
    feeds = example_inputs(card, batch=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            exported,
            tuple(torch.from_numpy(v) for v in feeds.values()),
            str(tmp),
            input_names=list(feeds),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes(card),
            opset_version=OPSET,
            dynamo=False,
        )
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    for key, value in card.to_props().items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"ganserve {card.kind} generator ({config.family}, {config.dataset})"
    onnx.save(model, str(tmp))
    try:
        errors = verify(tmp, head, card)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return ExportResult(out, card, errors)
