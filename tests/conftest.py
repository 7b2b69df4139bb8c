"""Shared test set-up that needs only the SDK: the server fixtures import the server when used.

torch-needing fixtures live beside the tests that need torch (tests/training/conftest.py,
tests/export/conftest.py), so that tests/clients' SDK-only files run where only the SDK and
pytest are installed (tests/clients/test_install.py runs them so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.servers import RunningServer


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """One server on the shipped models for a whole test module."""
    from tests.servers import BASE, RunningServer

    running = RunningServer(BASE)
    yield running
    running.stop()


@pytest.fixture
def make_server() -> Iterator[Callable[..., RunningServer]]:
    """Start servers with custom settings; every one is stopped at the end of the test."""
    from tests.servers import BASE, RunningServer

    started: list[RunningServer] = []

    def make(**changes: object) -> RunningServer:
        running = RunningServer(replace(BASE, **changes))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop(grace=1)
