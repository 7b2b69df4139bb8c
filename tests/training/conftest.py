"""Fixtures for training tests: one classifier trained per session (about a minute)."""

from pathlib import Path

import pytest

from training.classifier import ClassifierResult, load_or_train


@pytest.fixture(scope="session")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ClassifierResult:
    """The project's digit classifier, trained once for the whole test session."""
    path: Path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    return load_or_train(path, progress=False)
