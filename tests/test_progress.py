"""Progress on rank 0: a bar redrawn on a terminal, plain lines anywhere else."""

from __future__ import annotations

import io

import pytest

from mpicomp.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def steps(progress: Progress, last: int, first: int = 1) -> None:
    for step in range(first, last + 1):
        progress.update(step, f"loss {1 / step:.3f}" if step % 5 == 0 else None)
    progress.close()


def test_lines_in_logs_one_each_tenth_of_the_steps():
    log = io.StringIO()
    steps(Progress("diana", 300, stream=log), 300)
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in log.getvalue()
    assert [ln.split("  ")[0] for ln in lines] == [
        f"diana: step {s}/300 ({s // 3} %)" for s in range(30, 301, 30)]
    assert lines[0].split("  ")[1] == "loss 0.033"  # the note of step 30


def test_a_resumed_run_shows_only_the_tenths_still_ahead():
    log = io.StringIO()
    steps(Progress("dcgd", 100, start=45, stream=log), 100, first=46)
    assert [ln.split(" (")[0] for ln in log.getvalue().splitlines()] == [
        f"dcgd: step {s}/100" for s in range(50, 101, 10)]


def test_a_terminal_gets_the_bar_and_off_or_other_ranks_nothing():
    tty = Terminal()
    steps(Progress("diana", 20, stream=tty), 20)
    assert tty.getvalue().startswith("\rdiana [") and tty.getvalue().endswith("\n")
    assert "20/20" in tty.getvalue()
    for kwargs in ({"mode": "off"}, {"enabled": False}):
        quiet = Terminal()
        steps(Progress("diana", 20, stream=quiet, **kwargs), 20)
        assert quiet.getvalue() == ""
    forced = io.StringIO()
    steps(Progress("diana", 20, mode="bar", stream=forced), 20)
    assert forced.getvalue().startswith("\rdiana [")
    with pytest.raises(ValueError, match="choose one of auto, bar, lines, off"):
        Progress("diana", 20, mode="on")
