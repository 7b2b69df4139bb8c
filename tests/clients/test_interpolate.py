"""Interpolate: images along a path through the latent space, defined once (ganserve.latent),
served by ganserve.v1 (unary and stream) and called from both clients."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest

from ganserve import errors
from ganserve._wire import interpolate_request, resume, total
from ganserve.latent import endpoint, latents, path_coefficients, path_latents
from tests.clients.test_sdk import Mirror
from tests.servers import CGAN, DCGAN, PIX2PIX, RunningServer

NZ = 100  # both shipped generators' latent size


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest, server: RunningServer) -> Iterator[Mirror]:
    mirror = Mirror(request.param, server.address, seed=0)
    yield mirror
    mirror.close()


def test_a_path_starts_and_ends_at_its_ends_bit_for_bit_and_slices_agree() -> None:
    a, b = endpoint((7, 3), NZ), endpoint((9, 0), NZ)
    assert np.array_equal(a, latents(7, 3, 1, NZ)[0])
    for method in ("spherical", "linear"):
        z = path_latents(a, b, 11, method)
        assert z.dtype == np.float32 and z.shape == (11, NZ)
        assert np.array_equal(z[0], a) and np.array_equal(z[-1], b)
        # any span of the path is the same rows: a stream's chunks equal one call
        assert np.array_equal(path_latents(a, b, 11, method, lo=4, n=5), z[4:9])
    linear = path_latents(a, b, 3, "linear")[1]
    assert np.array_equal(linear, np.float32(0.5) * a + np.float32(0.5) * b)


def test_spherical_keeps_the_norm_that_linear_loses_between_independent_latents() -> None:
    a, b = endpoint((1, 0), NZ), endpoint((1, 1), NZ)
    middle = {
        m: float(np.linalg.norm(path_latents(a, b, 3, m)[1])) for m in ("spherical", "linear")
    }
    ends = (np.linalg.norm(a) + np.linalg.norm(b)) / 2
    # two independent normals are nearly orthogonal: the chord's middle is 1/sqrt(2) as long
    assert abs(middle["spherical"] / ends - 1) < 0.05
    assert abs(middle["linear"] / ends - 2**-0.5) < 0.05
    # parallel ends: slerp's angle is 0, and it falls back to the line
    assert np.array_equal(path_coefficients(a, 2 * a, 5, "spherical"),
                          path_coefficients(a, 2 * a, 5, "linear"))  # fmt: skip


def test_the_path_contract_is_pinned() -> None:
    """Golden digest of a path: a change to the definition must be a deliberate one (the
    server's, the SDK's and every caller's reproduced latents change with it)."""
    a, b = endpoint((7, 3), NZ, truncation=2.0), endpoint((9, 0), NZ, truncation=2.0)
    z = np.concatenate([path_latents(a, b, 16, "spherical"), path_latents(a, b, 16, "linear")])
    digest = hashlib.sha256(z.tobytes()).hexdigest()
    assert digest == "77dd5afda71e08434673c4fa94d4d99d28dcd110cf0b5061a131a11ea00f4fdd"


def test_explicit_ends_are_checked_and_clipped_by_the_truncation() -> None:
    z = np.linspace(-3, 3, NZ, dtype=np.float32)
    assert np.abs(endpoint(z, NZ, truncation=1.0)).max() == 1.0
    for bad in (z.astype(np.float64), z[:10], np.full(NZ, np.nan, np.float32)):
        with pytest.raises(ValueError):
            endpoint(bad, NZ)


def test_interpolate_serves_the_paths_latents_and_its_ends_are_samples(client: Mirror) -> None:
    got = client.interpolate(DCGAN, (7, 3), (9, 0), 8)
    assert got.pixels.shape == (8, 32, 32, 1) and got.start_index == 0
    a, b = endpoint((7, 3), NZ), endpoint((9, 0), NZ)
    local = client.sample(DCGAN, latents=path_latents(a, b, 8))
    assert np.array_equal(got.pixels, local.pixels)
    assert np.array_equal(got.pixels[0], client.sample(DCGAN, 1, seed=7, start_index=3).pixels[0])
    assert np.array_equal(got.pixels[-1], client.sample(DCGAN, 1, seed=9).pixels[0])
    # explicit ends, a linear path, truncated ends
    linear = client.interpolate(DCGAN, a, b, 5, method="linear", truncation=1.5)
    ta, tb = np.clip(a, -1.5, 1.5), np.clip(b, -1.5, 1.5)
    want = client.sample(DCGAN, latents=path_latents(ta, tb, 5, "linear"))
    assert np.array_equal(linear.pixels, want.pixels)


def test_a_conditional_path_shows_one_class(client: Mirror) -> None:
    got = client.interpolate(CGAN, (1, 0), (2, 0), 6, label=3, truncation=2.0)
    assert got.labels is not None and got.labels.tolist() == [3] * 6
    a, b = endpoint((1, 0), NZ, truncation=2.0), endpoint((2, 0), NZ, truncation=2.0)
    want = client.generate(CGAN, latents=path_latents(a, b, 6), label=3)
    assert np.array_equal(got.pixels, want.pixels)


def test_a_stream_of_a_path_is_the_unary_call_in_chunks(client: Mirror) -> None:
    chunks = client.interpolate_stream(CGAN, (1, 0), (2, 5), 23, label=8, chunk_size=5)
    assert [c.start_index for c in chunks] == [0, 5, 10, 15, 20]
    whole = client.interpolate(CGAN, (1, 0), (2, 5), 23, label=8)
    assert np.array_equal(np.concatenate([c.pixels for c in chunks]), whole.pixels)


def test_a_resumed_path_stream_asks_for_the_steps_after_the_ones_received() -> None:
    request = interpolate_request(DCGAN, (1, 0), (2, 0), 100, method="linear", label=None,
                                  truncation=0.0, version=0, output="uint8")  # fmt: skip
    rest = resume(request, 40)
    assert rest.start_index == 40 and rest.steps == 100 and total(rest) == 60
    assert rest.start.image.seed == 1 and rest.end.image.seed == 2


@pytest.mark.parametrize(
    ("model", "kwargs", "error", "words"),
    [
        (DCGAN, {"steps": 1}, errors.InvalidArgument, "steps: 1; at least 2"),
        (DCGAN, {"steps": 5000}, errors.InvalidArgument, "steps: 5000; must be 1 to"),
        (DCGAN, {"label": 2}, errors.WrongModelKind, "label: model 'mnist-dcgan' is uncond"),
        (CGAN, {}, errors.InvalidArgument, "label: required by a conditional model (0 to 9)"),
        (CGAN, {"label": 10}, errors.InvalidArgument, "label: label 10 out of range"),
        (PIX2PIX, {}, errors.WrongModelKind, "call Translate, not Interpolate"),
        (DCGAN, {"start": np.zeros(3, np.float32)}, errors.InvalidArgument, "start.latent: float"),
        (DCGAN, {"truncation": 0.01}, errors.InvalidArgument, "truncation: 0.01"),
        (DCGAN, {"method": "cubic"}, errors.InvalidArgument, "method: 'cubic'"),
    ],
)
def test_bad_paths_are_errors_naming_the_field(
    client: Mirror, model: str, kwargs: dict, error: type, words: str
) -> None:
    args = {"start": (1, 0), "end": (2, 0), "steps": 4, **kwargs}
    with pytest.raises(error) as info:
        client.interpolate(model, args.pop("start"), args.pop("end"), args.pop("steps"), **args)
    assert words in str(info.value)
