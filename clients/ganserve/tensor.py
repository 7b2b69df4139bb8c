"""numpy arrays ↔ the wire's `Tensor` message (C order, little-endian), for server and SDK."""

from __future__ import annotations

import math

import numpy as np

from ganserve.v1 import ganserve_pb2 as pb

DTYPES: dict[str, type[np.generic]] = {"uint8": np.uint8, "float32": np.float32, "int64": np.int64}


def to_tensor(array: np.ndarray) -> pb.Tensor:
    """One message holding the whole array."""
    tensor = pb.Tensor()
    fill_tensor(tensor, array)
    return tensor


def fill_tensor(tensor: pb.Tensor, array: np.ndarray) -> None:
    """Write `array` into `tensor` (e.g. a reply's own field: no copy of the message)."""
    order = array.dtype.byteorder
    if order == ">" or (order == "=" and not np.little_endian):  # the wire is little-endian
        array = array.astype(array.dtype.newbyteorder("<"))
    tensor.dtype = array.dtype.name
    tensor.shape[:] = array.shape
    tensor.data = array.tobytes()  # C order, whatever the array's layout


def from_tensor(tensor: pb.Tensor, field: str = "tensor") -> np.ndarray:
    """The array in a message; ValueError naming `field` when dtype, shape or size is wrong."""
    if tensor.dtype not in DTYPES:
        raise ValueError(f"{field}.dtype: {tensor.dtype!r}; one of {', '.join(DTYPES)}")
    dtype = np.dtype(DTYPES[tensor.dtype]).newbyteorder("<")
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"{field}.shape: {list(shape)} has a negative dimension")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no int64 overflow
    if expected != len(tensor.data):
        raise ValueError(
            f"{field}.data: {len(tensor.data)} bytes, shape {list(shape)} of "
            f"{tensor.dtype} needs {expected}"
        )
    # a read-only view of the message bytes (no copy on little-endian machines)
    return (
        np.frombuffer(tensor.data, dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)
    )


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Generator range [-1, 1] → pixels 0-255, rounded to the nearest level (as the exported
    serving head does inside the graph)."""
    return np.rint((x + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def to_unit(pixels: np.ndarray) -> np.ndarray:
    """Pixels 0-255 → float32 in [-1, 1], the generator's range."""
    return pixels.astype(np.float32) / 127.5 - 1.0
