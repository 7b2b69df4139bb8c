"""The latent contract: the latent vector of image `index` under `seed`, defined once.

Every image the service makes is a function of (model version, seed, index, label) alone, so a
latent must not depend on how a request was cut into batches, and it must cost well under a
microsecond per image. The definition:

1. Bits. Philox-4x64-10 (numpy's `Philox`) keyed by `seed`. Image `index` owns the counter
   blocks `index * B .. index * B + B - 1`, with `B = ceil(nz / 8)`: each block gives four
   64-bit words, each word two 32-bit values (low half first), one per latent element. Any range
   of indices is computed directly, in one vectorised call, with no state carried over.
2. Normal values. A 32-bit value x maps through the inverse normal CDF, tabulated at 2^16 + 1
   knots `T[k] = Phi^-1((k + 1) / (2^16 + 2))` (float32; `statistics.NormalDist`) and
   interpolated linearly: `z = T[x >> 16] + ((x & 0xFFFF) / 2^16) * (T[(x >> 16) + 1] -
   T[x >> 16])`, all in float32. That is a standard normal bounded by |z| <= 4.17 (the tail
   beyond holds 3e-5 of the mass), with nothing but IEEE float32 arithmetic at run time, so the
   same on every machine. `table_checksum()` pins the table.
3. Truncation (optional, threshold t, the "truncation trick"): values with |z| > t are redrawn
   from the same construction keyed by `(seed + r * 2^32) mod 2^64` at the same counters,
   round r = 1, 2, ... up to `MAX_TRUNCATION_ROUNDS`; what is still out of range is clipped.

This module needs numpy alone; the server and the Python SDK both import it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from statistics import NormalDist

import numpy as np

KNOTS = 2**16 + 1
MAX_TRUNCATION_ROUNDS = 16
MIN_TRUNCATION = 0.1
MAX_TRUNCATION = 10.0  # beyond it nothing is cut in practice: |z| > 10 has probability ~1e-23


def truncation_problem(truncation: float) -> str | None:
    """Why `truncation` is not a threshold a request may give (0 is off), or None."""
    if truncation == 0 or MIN_TRUNCATION <= truncation <= MAX_TRUNCATION:
        return None
    return f"truncation: {truncation:g}; 0 (off) or {MIN_TRUNCATION:g} to {MAX_TRUNCATION:g}"


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(T[0 .. 2^16 - 1], slopes T[k + 1] - T[k]), float32: the inverse normal CDF's knots."""
    inv_cdf = NormalDist().inv_cdf
    knots = np.array([inv_cdf((k + 1) / (KNOTS + 1)) for k in range(KNOTS)], np.float32)
    return knots[:-1].copy(), np.diff(knots).astype(np.float32)


def table_checksum() -> str:
    """sha256 of the float32 knot table: equal on every machine that honours the contract."""
    base, slope = _tables()
    return hashlib.sha256(base.tobytes() + slope.tobytes()).hexdigest()


def blocks_per_image(nz: int) -> int:
    """Philox counter blocks (4 words, 8 latent values) that one image owns."""
    return -(-nz // 8)


_local = threading.local()
_WORD = 2**64 - 1


def _philox_at(seed: int, counter: int) -> np.random.Philox:
    """This thread's Philox, set to key `seed` and 256-bit `counter` (the same stream as
    `Philox(key=seed)` advanced by `counter`, without the cost of building one per call)."""
    bits = getattr(_local, "bits", None)
    if bits is None:
        bits = _local.bits = np.random.Philox(key=0)
    bits.state = {
        "bit_generator": "Philox",
        "state": {
            "counter": np.array([(counter >> s) & _WORD for s in (0, 64, 128, 192)], np.uint64),
            "key": np.array([seed & _WORD, 0], np.uint64),
        },
        "buffer": np.zeros(4, np.uint64),
        "buffer_pos": 4,
        "has_uint32": 0,
        "uinteger": 0,
    }
    return bits


def _normals(seed: int, start: int, count: int, nz: int) -> np.ndarray:
    """float32 [count, nz] for images start .. start + count - 1 (steps 1 and 2 above)."""
    blocks = blocks_per_image(nz)
    bits = _philox_at(seed, start * blocks)  # the counter of image `start`'s first block
    words = bits.random_raw(count * blocks * 4).astype("<u8", copy=False)
    x = words.view("<u4").reshape(count, blocks * 8)[:, :nz]
    base, slope = _tables()
    cell = x >> 16
    frac = (x & 0xFFFF).astype(np.float32)
    frac *= np.float32(1.0 / 65536.0)
    z = slope[cell]
    z *= frac
    z += base[cell]
    return z


def latents(
    seed: int, start_index: int, count: int, nz: int, *, truncation: float = 0.0
) -> np.ndarray:
    """float32 [count, nz]: the latents of images start_index .. start_index + count - 1.

    `seed` and `start_index` are unsigned 64-bit integers; `truncation` 0 means none.
    """
    if not (0 <= seed < 2**64 and start_index >= 0 and start_index + count <= 2**64):
        raise ValueError("seed and start_index + count must fit in unsigned 64 bits")
    if count < 0 or nz < 1:
        raise ValueError(f"count {count} must be >= 0 and nz {nz} >= 1")
    if truncation and truncation < MIN_TRUNCATION:
        raise ValueError(f"truncation {truncation} must be 0 (off) or >= {MIN_TRUNCATION}")
    if count == 0:
        return np.empty((0, nz), np.float32)
    z = _normals(seed, start_index, count, nz)
    if truncation:
        t = np.float32(truncation)
        for round_ in range(1, MAX_TRUNCATION_ROUNDS + 1):
            out = np.abs(z) > t
            rows = np.flatnonzero(out.any(axis=1))
            if not len(rows):
                break
            # Redraw whole rows at their own counters under this round's key and keep only
            # the out-of-range values: each row still depends on its index alone.
            key = (seed + round_ * 2**32) % 2**64
            for lo, hi in _runs(rows):
                redraw = _normals(key, start_index + lo, hi - lo, nz)
                z[lo:hi] = np.where(out[lo:hi], redraw, z[lo:hi])
        np.clip(z, -t, t, out=z)
    return z


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs [lo, hi) of sorted row numbers, so redraws stay vectorised."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(rows, breaks)]


# -- paths through the latent space (Interpolate) ---------------------------------------------

PATH_METHODS = ("spherical", "linear")
_PARALLEL = 1e-6  # sin(angle) below it: the ends are (anti)parallel and slerp is linear


def endpoint(
    point: tuple[int, int] | np.ndarray, nz: int, *, truncation: float = 0.0
) -> np.ndarray:
    """float32 [nz]: one end of a path. `(seed, index)` is that image's latent (truncated as
    `latents` truncates: redrawn); an explicit vector is checked and clipped to `truncation`."""
    if isinstance(point, tuple):
        seed, index = point
        return latents(seed, index, 1, nz, truncation=truncation)[0]
    z = np.asarray(point)
    if z.dtype != np.float32 or z.shape != (nz,):
        raise ValueError(f"{z.dtype}{list(z.shape)}; must be float32 [{nz}]")
    if not np.isfinite(z).all():
        raise ValueError("contains NaN or infinity")
    return np.clip(z, -truncation, truncation) if truncation else z.copy()


def path_coefficients(
    a: np.ndarray, b: np.ndarray, steps: int, method: str, lo: int = 0, n: int | None = None
) -> np.ndarray:
    """float64 [n, 2]: the weights (of a, of b) of steps lo .. lo + n - 1 (all by default),
    step k at t = float64(k) / float64(steps - 1).

    Linear: (1 - t, t). Spherical (slerp, Shoemake 1985; White 2016 for GAN latents): with the
    angle w between a and b, (sin((1 - t) w), sin(t w)) / sin w, falling back to linear when
    sin w < 1e-6. The angle comes from exact float64 products summed by `math.fsum` (correctly
    rounded), then `math.acos` and `math.sin`: the same on every machine whose libm rounds
    them alike (glibc's do; the ends are exact everywhere: (1, 0) and (0, 1))."""
    if method not in PATH_METHODS:
        raise ValueError(f"method {method!r}; one of {', '.join(PATH_METHODS)}")
    if steps < 2:
        raise ValueError(f"steps {steps}; at least 2 (both ends are images)")
    n = steps - lo if n is None else n
    if not 0 <= lo <= lo + n <= steps:
        raise ValueError(f"steps {lo} .. {lo + n - 1} of a path of {steps}")
    t = (np.arange(n, dtype=np.float64) + float(lo)) / float(steps - 1)
    linear = np.stack([1.0 - t, t], axis=1)
    if method == "linear":
        return linear
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norm_a = math.sqrt(math.fsum((a64 * a64).tolist()))
    norm_b = math.sqrt(math.fsum((b64 * b64).tolist()))
    if not norm_a or not norm_b:
        return linear
    cos = max(-1.0, min(1.0, math.fsum((a64 * b64).tolist()) / (norm_a * norm_b)))
    angle = math.acos(cos)
    sin = math.sin(angle)
    if sin < _PARALLEL:
        return linear
    return np.array([(math.sin((1 - x) * angle) / sin, math.sin(x * angle) / sin) for x in t])


def path_latents(
    a: np.ndarray, b: np.ndarray, steps: int, method: str = "spherical", lo: int = 0,
    n: int | None = None,
) -> np.ndarray:  # fmt: skip
    """float32 [n, nz]: steps lo .. lo + n - 1 of the path from `a` to `b` (both float32 [nz],
    see `endpoint`) in `steps` images, both ends included: step k is float32(c_a) * a +
    float32(c_b) * b in float32 arithmetic, (c_a, c_b) from `path_coefficients`. Step 0 is `a`
    and step steps - 1 is `b`, bit for bit."""
    c = path_coefficients(a, b, steps, method, lo, n).astype(np.float32)
    z = c[:, :1] * a[None, :]
    z += c[:, 1:] * b[None, :]
    return z
