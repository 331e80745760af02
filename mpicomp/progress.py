"""Progress of a run on rank 0: a one-line bar on a terminal, plain lines in logs (no dependency).

A terminal gets a bar redrawn in place at most ten times a second. Anything else — the ranks'
stderr under ``mpiexec``, a SLURM output file, a pipe — gets one plain line each time another
tenth of the steps is done, so logs stay readable and carry no ``\\r`` redraws.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: ``--progress`` choices: auto (bar on a terminal, else lines), bar, lines, off.
MODES = ("auto", "bar", "lines", "off")


class Progress:
    """``label [#####.....] step/total  loss …  rate it/s`` (bar) or
    ``label: step 30/300 (10 %)  loss …  rate it/s`` (lines).

    Parameters
    ----------
    label : str
        Name shown first (the algorithm).
    total : int
        Steps to reach.
    start : int
        Step the run starts from (a resumed run); rates count from here.
    mode : str
        One of `MODES`; ``auto`` picks ``bar`` when ``stream`` is a terminal, else ``lines``.
    enabled : bool
        When false every call is a no-op (ranks other than 0).
    stream : file, optional
        Default ``sys.stderr``.
    """

    WIDTH = 24
    LINES = 10  # plain lines per run, one each tenth of the steps

    def __init__(self, label: str, total: int, start: int = 0, mode: str = "auto",
                 enabled: bool = True, stream: TextIO | None = None):
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r}: choose one of {', '.join(MODES)}")
        self.label, self.total, self.start = label, max(int(total), 1), int(start)
        self.stream = stream or sys.stderr
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "lines"
        self.mode = mode if enabled else "off"
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._note = ""
        self._tenths = self.LINES * self.start // self.total  # tenths already shown
        self._step = self._drawn = self.start

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def update(self, step: int, note: str | None = None, force: bool = False) -> None:
        """Show ``step`` (and ``note``, kept until replaced)."""
        if note is not None:
            self._note = note
        self._step = step
        if self.mode == "bar":
            self._bar(step, force)
        elif self.mode == "lines":
            self._line(step)

    def _rate(self, step: int, now: float) -> float:
        return (step - self.start) / max(now - self._t0, 1e-9)

    def _bar(self, step: int, force: bool) -> None:
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last, self._drawn = now, step
        filled = int(self.WIDTH * min(step, self.total) / self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {step}/{self.total} {self._note} "
                          f"{self._rate(step, now):.0f} it/s ")
        self.stream.flush()

    def _line(self, step: int) -> None:
        tenths = self.LINES * min(step, self.total) // self.total
        if tenths <= self._tenths:
            return
        self._tenths = tenths
        percent = 100 * min(step, self.total) // self.total
        note = f"  {self._note}" if self._note else ""
        self.stream.write(f"{self.label}: step {step}/{self.total} ({percent} %){note}  "
                          f"{self._rate(step, time.perf_counter()):.0f} it/s\n")
        self.stream.flush()

    def close(self) -> None:
        """Draw the bar at the last step if a redraw was skipped, and end its line (lines
        need nothing)."""
        if self.mode == "bar":
            if self._drawn != self._step:
                self._bar(self._step, force=True)
            self.stream.write("\n")
            self.stream.flush()
