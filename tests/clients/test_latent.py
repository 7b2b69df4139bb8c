"""The latent contract: one definition, independent of batching, pinned by golden values."""

import numpy as np
import pytest

from ganserve.latent import MAX_TRUNCATION_ROUNDS, latents, table_checksum


def test_any_split_of_a_range_gives_the_same_latents() -> None:
    whole = latents(7, 1000, 100, 100)
    parts = np.concatenate([latents(7, 1000 + i, n, 100) for i, n in [(0, 1), (1, 33), (34, 66)]])
    assert whole.dtype == np.float32 and whole.shape == (100, 100)
    assert whole.tobytes() == parts.tobytes()
    assert not np.array_equal(latents(8, 1000, 1, 100), whole[:1])  # the seed matters
    assert not np.array_equal(latents(7, 1001, 1, 100), whole[:1])  # so does the index


def test_golden_values_pin_the_definition() -> None:
    # If this fails, every image the service ever made changes: bump the model contract.
    assert table_checksum().startswith("719ea324990842f8")
    z = latents(0, 0, 1, 100)[0]
    assert z[:4].tolist() == pytest.approx(GOLDEN, abs=0)
    assert latents(2**64 - 1, 2**64 - 2, 1, 3).shape == (1, 3)


GOLDEN = [-1.8150759935379028, -2.2713911533355713, 0.28439679741859436, -0.7013026475906372]


def test_standard_normal_moments() -> None:
    z = latents(3, 0, 20000, 100).ravel()
    assert abs(z.mean()) < 0.005 and abs(z.std() - 1) < 0.005
    assert abs((z**4).mean() - 3) < 0.05  # kurtosis of a normal
    assert np.abs(z).max() <= 4.2


def test_truncation_redraws_only_out_of_range_values_per_image() -> None:
    plain = latents(5, 0, 500, 100)
    cut = latents(5, 0, 500, 100, truncation=1.5)
    assert np.abs(cut).max() <= 1.5
    inside = np.abs(plain) <= 1.5
    assert np.array_equal(cut[inside], plain[inside])
    singles = np.concatenate([latents(5, i, 1, 100, truncation=1.5) for i in range(500)])
    assert singles.tobytes() == cut.tobytes()
    assert MAX_TRUNCATION_ROUNDS >= 8


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seed=-1),
        dict(seed=2**64),
        dict(start_index=2**64 - 1, count=2),
        dict(nz=0),
        dict(truncation=0.05),
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    args = dict(seed=0, start_index=0, count=1, nz=4) | kwargs
    truncation = args.pop("truncation", 0.0)
    with pytest.raises(ValueError):
        latents(args["seed"], args["start_index"], args["count"], args["nz"], truncation=truncation)
