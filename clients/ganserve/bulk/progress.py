"""A job's progress on stderr, with no dependencies."""

from __future__ import annotations

import sys
import time


class Progress:
    """Progress on stderr: images, images/s, ETA (no dependencies). On a terminal a line
    redrawn twice a second; otherwise (a log, a Kubernetes pod) a line every 10 s and one at
    the end. `who` names the worker of a distributed job ("worker 2/3")."""

    def __init__(self, total: int, done: int, quiet: bool = False, who: str = "") -> None:
        self.total, self.done, self.quiet = total, done, quiet
        self.started, self.first, self.last = time.monotonic(), done, 0.0
        self.who = f"{who}: " if who else ""
        self.terminal = sys.stderr.isatty()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        every = 0.5 if self.terminal else 10.0
        if self.quiet or (now - self.last < every and self.done < self.total):
            return
        self.last = now
        rate = (self.done - self.first) / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate else float("inf")
        line = (
            f"{self.who}{self.done:,}/{self.total:,} images  {rate:,.0f} images/s  ETA {eta:,.0f} s"
        )
        if not self.terminal:
            sys.stderr.write(line + "\n")
        else:
            sys.stderr.write(f"\r{line}   " + ("\n" if self.done >= self.total else ""))
        sys.stderr.flush()
