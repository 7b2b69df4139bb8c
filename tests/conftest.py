"""Shared test set-up: seeded, and one digit classifier trained per session (about a minute)."""

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ganserve.training.classifier import ClassifierResult, load_or_train
from ganserve.training.judge import load_or_train_judge
from tests.servers import BASE, RunningServer


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ClassifierResult:
    """The project's digit classifier, trained once for the whole test session."""
    path: Path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    return load_or_train(path, progress=False)


@pytest.fixture(scope="session")
def judge(tmp_path_factory: pytest.TempPathFactory) -> ClassifierResult:
    """The independent judge, trained once for the whole test session (about 30 s)."""
    path: Path = tmp_path_factory.mktemp("judge") / "judge.pt"
    return load_or_train_judge(path, progress=False)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """One server on the shipped models for a whole test module."""
    running = RunningServer(BASE)
    yield running
    running.stop()


@pytest.fixture
def make_server() -> Iterator[Callable[..., RunningServer]]:
    """Start servers with custom settings; every one is stopped at the end of the test."""
    started: list[RunningServer] = []

    def make(**changes: object) -> RunningServer:
        running = RunningServer(replace(BASE, **changes))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop(grace=1)
