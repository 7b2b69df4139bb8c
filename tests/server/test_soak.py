"""A one-minute run of the fault soak (`bench/soak.py`; docs/serving.md has the 10-minute one)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_minute_of_faults_loses_no_call_and_no_byte() -> None:
    argv = [sys.executable, "-m", "bench.soak", "--minutes", "1", "--restart-every", "20"]
    done = subprocess.run(
        [*argv, "--warmup", "15"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    report = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert "lost 0, wrong bytes 0, INTERNAL/UNKNOWN 0" in done.stdout, report
    restarts = re.search(r"(\d+) restarts", done.stdout)
    assert restarts and int(restarts.group(1)) >= 1, report
