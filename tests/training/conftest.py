"""Training tests: torch seeded before each test, and the shipped judges (judges/), loaded.

The judges are loaded, not retrained: retraining both took about 4 min of every test run.
Their training code is tested on a short schedule in test_judges.py; `python -m
ganserve.training classifier` is what trains them in full.
"""

from pathlib import Path

import pytest
import torch

from ganserve.training.classifier import ClassifierResult, load_or_train
from ganserve.training.judge import beside, load_or_train_judge
from ganserve.training.trainer import DEFAULT_CLASSIFIER

SHIPPED_CLASSIFIER = Path(__file__).resolve().parents[2] / DEFAULT_CLASSIFIER


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def classifier() -> ClassifierResult:
    """The project's digit classifier as shipped in judges/classifier.pt."""
    assert SHIPPED_CLASSIFIER.is_file(), "judges/classifier.pt is missing (never retrained here)"
    return load_or_train(SHIPPED_CLASSIFIER, progress=False)


@pytest.fixture(scope="session")
def judge() -> ClassifierResult:
    """The independent judge as shipped in judges/judge.pt."""
    path = beside(SHIPPED_CLASSIFIER)
    assert path.is_file(), "judges/judge.pt is missing (never retrained here)"
    return load_or_train_judge(path, progress=False)
