"""deploy/prometheus: the rules load (`promtool check rules`) and fire as their unit tests say
(`promtool test rules`). promtool comes with Debian's `prometheus` package: installed here when
missing and apt can (root), else these tests are skipped, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("promtool missing, and apt-get cannot install Debian's prometheus here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "prometheus"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"promtool missing; {' '.join(argv)} failed: {done.stderr[-300:]}")
    return shutil.which("promtool") or pytest.skip("prometheus installed without promtool")


@pytest.fixture(scope="module")
def tool() -> str:
    return promtool()


def test_the_rules_load(tool: str) -> None:
    done = subprocess.run(
        [tool, "check", "rules", "ganserve-rules.yaml"], cwd=RULES, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 11 rules found" in done.stdout


def test_the_alerts_fire_as_their_unit_tests_say(tool: str) -> None:
    done = subprocess.run(
        [tool, "test", "rules", "ganserve-rules.test.yaml"],
        cwd=RULES,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
