"""The rules the server, the SDK and bulk jobs share, each stated once.

The server (`ganserve.server`), the SDK (`ganserve.client`) and bulk jobs (`ganserve.bulk`)
import these instead of restating them, so a caller and the server can never disagree:

- `parse_version`: how a model version is written (folder names, OIP version strings);
- `image_count`: how many images a Sample/Generate request asks for, and which field says so
  (`request_count` for a ganserve.v1 message);
- `balanced_labels`: the labels of a balanced request (image index i shows class i mod C), and
  `balanced_counts`, how many of a span's images show each class;
- `MAX_CHUNK_SIZE`: the most images one streamed message may hold;
- `MASK_KEEP`, `MASK_FILL` and `mask_problem`: an inpainting mask's values (0 keep, 255 fill;
  0 and 1 read the same);
- `INDEX_SPACE` and `SEEDS`: image indices and seeds are unsigned 64-bit (a job's count, its
  shards' spans and a manifest's claims all stay inside them).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

MAX_VERSION = 2**63 - 1  # the wire's int64
MAX_CHUNK_SIZE = 4096  # images per streamed message (a request's chunk_size, or the default)
INDEX_SPACE = 2**64  # image indices (start_index + i) are uint64: start + count <= 2^64
SEEDS = 2**64  # a seed is uint64: 0 to 2^64 - 1
MASK_KEEP, MASK_FILL = 0, 255  # an inpainting mask: keep the pixel, fill it (1 reads as fill)
_VERSION = re.compile(r"[1-9][0-9]{0,18}")  # ASCII only: str.isdigit() also takes '²'


def parse_version(text: str) -> int | None:
    """The version `text` names, or None if it names none: plain ASCII decimal, no sign, no
    leading zero, no spaces, 1 to 2^63 - 1."""
    if not _VERSION.fullmatch(text):
        return None
    version = int(text)
    return version if version <= MAX_VERSION else None


def image_count(
    count: int, latent_rows: int | None = None, label_count: int | None = None
) -> tuple[int, str]:
    """(images asked for, the field that says so) of a Sample/Generate request: the rows of
    its explicit latents if it has some, else `count`, else one per listed label (when the
    request lists labels and leaves `count` 0)."""
    if latent_rows is not None:
        return latent_rows, "latents"
    if not count and label_count is not None:
        return label_count, "labels"
    return count, "count"


def request_count(request: Any) -> int:
    """`image_count` of a ganserve.v1 SampleRequest or GenerateRequest; an InterpolateRequest's
    steps from its start_index on."""
    if "steps" in request.DESCRIPTOR.fields_by_name:
        return max(0, request.steps - request.start_index)
    latent_rows = (list(request.latents.shape) or [0])[0] if request.HasField("latents") else None
    lists = "condition" in request.DESCRIPTOR.oneofs_by_name
    labels = lists and request.WhichOneof("condition") == "labels"
    return image_count(request.count, latent_rows, len(request.labels.values) if labels else None)[
        0
    ]


def balanced_labels(first: int, n: int, num_classes: int) -> np.ndarray:
    """The classes of images `first` .. `first + n - 1` of a balanced request: index i shows
    class i mod `num_classes` (computed without int64 overflow anywhere in the index space)."""
    offset = first % num_classes
    return (np.arange(n, dtype=np.int64) + offset) % num_classes


def balanced_counts(first: int, n: int, num_classes: int) -> list[int]:
    """How many of `balanced_labels(first, n, num_classes)` show each class, counted without
    making them (a span may be up to 2^64 long)."""

    def below(x: int) -> list[int]:  # indices i < x with i mod num_classes == label
        return [(x - label + num_classes - 1) // num_classes for label in range(num_classes)]

    return [b - a for a, b in zip(below(first), below(first + n), strict=True)]


def mask_problem(mask: np.ndarray) -> str | None:
    """Why uint8 `mask` is not a binary mask (values MASK_KEEP and MASK_FILL, or 0 and 1), or
    None. One linear pass; the values are listed only when it is refused."""
    fill = MASK_FILL if mask.size and mask.max() > 1 else 1
    if np.count_nonzero((mask != MASK_KEEP) & (mask != fill)) == 0:
        return None
    shown = ", ".join(str(v) for v in np.unique(mask)[:6])
    return (
        f"values {shown}; a mask is binary: {MASK_KEEP} (keep) and {MASK_FILL} (fill), or 0 and 1"
    )
