"""A run of the fault soak of 36 s or a little more (`bench/soak.py`; docs/serving.md has the
10-minute one).

Every kind of call the soak makes (valid ones checked byte for byte, malformed ones, cancelled
streams, tight deadlines, large translations) and a replica restart under load happen in 36 s
as in 60: the test checks each happened, and that the restarted replica was back while the load
still ran, so that a shorter run cannot pass by doing less.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_36_seconds_of_faults_lose_no_call_and_no_byte() -> None:
    # The first restart begins after the warm-up, the quiet RSS reading (2-4 s) and
    # --restart-every: about 15 s in; the replica drains (its grace is 10 s) and is serving
    # again 5-21 s later (21 s on a slow CI machine, past the 36 s: --load-after-restart keeps
    # the load running until the restarted replica has served for 5 s).
    argv = [sys.executable, "-m", "bench.soak", "--minutes", "0.6", "--restart-every", "4"]
    argv += ["--load-after-restart", "5"]
    done = subprocess.run(
        # 36 s is too short for the 10-minute run's 5% RSS bar (docs/serving.md):
        # quiet-to-quiet RSS moved -4.4%, -2.0% and +5.5% in 60-90 s runs on the 2-core VM.
        # Here the bound only catches gross growth; the 10-minute run measures the bar.
        [*argv, "--warmup", "8", "--max-rss-growth", "0.25"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert "lost 0, wrong bytes 0, INTERNAL/UNKNOWN 0" in done.stdout, report
    restarts = re.search(r"(\d+) restarts", done.stdout)
    assert restarts and int(restarts.group(1)) >= 1, report
    # the progress lines, every 10 s while the load runs: one after the replica came back
    during = [int(n) for n in re.findall(r"^ +\d+ s: .* restarts (\d+),", done.stdout, re.M)]
    assert any(n >= 1 for n in during), report
    made = re.search(
        r"valid calls (\d+) \(large translations (\d+)\).*\nmalformed (\d+), cancelled streams "
        r"(\d+), tight deadlines (\d+)",
        done.stdout,
    )
    assert made and all(int(n) >= 1 for n in made.groups()), report
