"""The model card: everything the server needs to know about a model, inside its ONNX file.

The exporter writes it into `metadata_props` (string keys and values); the server reads it back
with `ModelCard.from_props`. It is the contract between the two, so it lives here, free of
torch and onnxruntime, and is versioned by `FORMAT`.

Keys, all prefixed ``ganserve.``:

| key | value |
|---|---|
| format | ``ganserve.model/1`` |
| kind | unconditional, conditional or translation |
| inputs | JSON list of {name, dtype, shape, layout}; -1: a dynamic axis (inpainting: a `mask`) |
| output | JSON {name, dtype, shape, layout, range}: uint8 NHWC [0, 255] or float32 NCHW [-1, 1] |
| latent_size | nz (0 for translation) |
| num_classes / class_names | conditional models: count, and a JSON list of names |
| image | JSON {height, width, channels}: the output size the model was trained at |
| size_multiple | translation: height and width must be multiples of this (2^U-Net depth) |
| scale | translation: output height and width per input pixel (super-resolution; absent: 1) |
| precision | fp32 or fp16 (weights and compute; inputs and outputs keep their dtypes) |
| provenance | JSON: family, dataset, steps, epochs, evaluation, source commit, checkpoint hash |
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ganserve.contract import MASK_FILL

FORMAT = "ganserve.model/1"
PREFIX = "ganserve."
KINDS: tuple[str, ...] = ("unconditional", "conditional", "translation")
Kind = Literal["unconditional", "conditional", "translation"]


class ModelCardError(ValueError):
    """Metadata that is missing or malformed; the message names the key."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type, shape (-1 = dynamic) and layout."""

    name: str
    dtype: str  # numpy name: float32, float16, int64, uint8
    shape: tuple[int, ...]
    layout: str = ""  # NHWC, NCHW, NC (latents), N (labels)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "layout": self.layout,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TensorSpec:
        return cls(
            str(value["name"]),
            str(value["dtype"]),
            tuple(int(d) for d in value["shape"]),
            str(value.get("layout", "")),
        )


@dataclass(frozen=True)
class ModelCard:
    """What a model is and how to feed it; see the module docstring for the stored keys."""

    kind: Kind
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    height: int
    width: int
    channels: int
    latent_size: int = 0
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    size_multiple: int = 1
    scale: int = 1  # output height and width per input pixel (super-resolution: 2 or 4)
    pixel_range: tuple[float, float] = (0.0, 255.0)
    precision: str = "fp32"
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelCardError(f"{PREFIX}kind: unknown {self.kind!r}; one of {', '.join(KINDS)}")
        if self.kind != "translation" and self.latent_size < 1:
            raise ModelCardError(f"{PREFIX}latent_size: a {self.kind} model needs one")
        if self.kind == "conditional" and (
            self.num_classes < 1 or len(self.class_names) != self.num_classes
        ):
            raise ModelCardError(
                f"{PREFIX}class_names: {len(self.class_names)} names for {self.num_classes} classes"
            )
        if self.scale < 1 or (self.scale > 1 and self.kind != "translation"):
            raise ModelCardError(
                f"{PREFIX}scale: {self.scale}; at least 1, and above 1 only for translation"
            )

    @property
    def uint8_output(self) -> bool:
        """True when the graph ends in the serving head (uint8 NHWC, 0-255)."""
        return self.output.dtype == "uint8"

    @property
    def takes_mask(self) -> bool:
        """True for an inpainting model: a translation that fills the holes its `mask` marks."""
        return any(spec.name == "mask" for spec in self.inputs)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the source image a translation model was trained at: the output
        size (`height`, `width`) divided by `scale`."""
        return self.height // self.scale, self.width // self.scale

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the image made from a source of `height` x `width`."""
        return height * self.scale, width * self.scale

    def input(self, name: str) -> TensorSpec:
        """The input called `name` (z, label, image or mask)."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def signature(self) -> dict[str, Any]:
        """What a caller of the model relies on: its kind (so its rpc), inputs (names, types,
        shapes past the batch axis), image shape and scale, latent size and classes. Versions
        of one model with the same signature take the same requests and answer the same
        shapes; the server refuses a version whose signature differs from the serving ones'."""
        return {
            "kind": self.kind,
            "inputs": [(s.name, s.dtype, list(s.shape[1:])) for s in self.inputs],
            "image": [self.height, self.width, self.channels],
            "scale": self.scale,
            "size_multiple": self.size_multiple,
            "latent_size": self.latent_size,
            "num_classes": self.num_classes,
        }

    def signature_change(self, other: ModelCard) -> str:
        """How `other`'s signature differs from this card's ("" when it does not), e.g.
        "kind: unconditional -> conditional"."""
        mine, theirs = self.signature(), other.signature()
        return "; ".join(f"{k}: {mine[k]} -> {theirs[k]}" for k in mine if mine[k] != theirs[k])

    def to_props(self) -> dict[str, str]:
        """The string key/value pairs stored in the ONNX file's metadata_props."""
        props = {
            "format": FORMAT,
            "kind": self.kind,
            "inputs": json.dumps([s.to_json() for s in self.inputs]),
            "output": json.dumps({**self.output.to_json(), "range": list(self.pixel_range)}),
            "latent_size": str(self.latent_size),
            "num_classes": str(self.num_classes),
            "class_names": json.dumps(list(self.class_names)),
            "image": json.dumps(
                {"height": self.height, "width": self.width, "channels": self.channels}
            ),
            "size_multiple": str(self.size_multiple),
            "scale": str(self.scale),
            "precision": self.precision,
            "provenance": json.dumps(self.provenance, sort_keys=True),
        }
        return {PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelCard:
        """Parse `to_props` output (e.g. onnxruntime's `custom_metadata_map`)."""

        def get(key: str) -> str:
            try:
                return props[PREFIX + key]
            except KeyError:
                raise ModelCardError(
                    f"{PREFIX}{key}: missing from the model's metadata (was it exported by "
                    "`python -m ganserve.export`?)"
                ) from None

        if get("format") != FORMAT:
            raise ModelCardError(f"{PREFIX}format: {get('format')!r}, this server reads {FORMAT}")
        try:
            output = json.loads(get("output"))
            image = json.loads(get("image"))
            return cls(
                kind=get("kind"),  # type: ignore[arg-type]
                inputs=tuple(TensorSpec.from_json(s) for s in json.loads(get("inputs"))),
                output=TensorSpec.from_json(output),
                height=int(image["height"]),
                width=int(image["width"]),
                channels=int(image["channels"]),
                latent_size=int(get("latent_size")),
                num_classes=int(get("num_classes")),
                class_names=tuple(json.loads(get("class_names"))),
                size_multiple=int(get("size_multiple")),
                scale=int(props.get(PREFIX + "scale", "1")),  # cards before super-resolution
                pixel_range=tuple(float(v) for v in output["range"]),  # type: ignore[arg-type]
                precision=get("precision"),
                provenance=json.loads(get("provenance")),
            )
        except ModelCardError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelCardError(f"{PREFIX}*: malformed model metadata ({exc!r})") from exc


def example_inputs(
    card: ModelCard, batch: int, size: tuple[int, int] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random inputs for a model with this card: latents N(0, 1), labels, or source images
    of `size` (default: the size the model was trained at, `card.input_size`)."""
    rng = np.random.default_rng(seed)
    h, w = size or card.input_size
    feeds: dict[str, np.ndarray] = {}
    for spec in card.inputs:
        if spec.name == "z":
            feeds["z"] = rng.standard_normal((batch, card.latent_size), dtype=np.float32)
        elif spec.name == "label":
            feeds["label"] = rng.integers(0, card.num_classes, batch, dtype=np.int64)
        elif spec.name == "mask":  # holes: 0 keep, 255 (uint8) or 1 (float) fill
            hole = rng.random((batch, h, w, 1)) < 0.3
            if spec.dtype == "uint8":
                feeds["mask"] = hole.astype(np.uint8) * MASK_FILL
            else:
                feeds["mask"] = np.ascontiguousarray(hole.transpose(0, 3, 1, 2), np.float32)
        elif spec.dtype == "uint8":
            feeds["image"] = rng.integers(0, 256, (batch, h, w, card.channels), dtype=np.uint8)
        else:
            feeds["image"] = rng.uniform(-1, 1, (batch, card.channels, h, w)).astype(np.float32)
    return feeds
