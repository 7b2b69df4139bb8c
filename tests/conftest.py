"""Shared test set-up: seeded, and one digit classifier trained per session (about a minute)."""

from pathlib import Path

import pytest
import torch

from training.classifier import ClassifierResult, load_or_train


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ClassifierResult:
    """The project's digit classifier, trained once for the whole test session."""
    path: Path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    return load_or_train(path, progress=False)
