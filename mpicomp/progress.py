"""A one-line progress bar for rank 0 (no dependency; redrawn at most ten times a second)."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    """``label [#####.....] step/total  loss …  rate it/s`` on one terminal line.

    Parameters
    ----------
    total : int
        Steps to reach.
    enabled : bool
        When false every call is a no-op.
    stream : file, optional
        Default ``sys.stderr``.
    """

    WIDTH = 24

    def __init__(self, label: str, total: int, start: int = 0, enabled: bool = True,
                 stream: Optional[TextIO] = None):
        self.label, self.total, self.start = label, max(int(total), 1), int(start)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._note = ""

    def update(self, step: int, note: Optional[str] = None, force: bool = False) -> None:
        """Show ``step`` (and ``note``, kept until replaced)."""
        if not self.enabled:
            return
        if note is not None:
            self._note = note
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        filled = int(self.WIDTH * min(step, self.total) / self.total)
        rate = (step - self.start) / max(now - self._t0, 1e-9)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {step}/{self.total} {self._note} {rate:.0f} it/s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
