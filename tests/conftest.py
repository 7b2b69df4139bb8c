"""Shared test set-up: quiet, seeded, and at most two threads (CI has two cores)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
