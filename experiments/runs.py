"""What the reproductions share: app runs in this process, Markdown tables, figures, a summary.

Each reproduction is one module with its settings at the top and one command,
``mpiexec -n N python -m experiments.NAME [--out DIR] [--data SPEC] [--quick]``. Its sections
call a `Runner`: ``run(app, defaults, *flags)`` runs an app on every rank and writes its trace
to ``DIR``; ``run.table(...)`` prints a Markdown table and keeps it for ``DIR/summary.md``;
``run.figure(...)`` draws traces with :func:`mpicomp.analyze.plot` into ``DIR``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mpicomp import analyze
from mpicomp.run import main as run_main
from mpicomp.trace import read_trace


class Runner:
    """Runs apps in this process, one trace each, reads the traces on rank 0 and collects the
    summary (tables, figures, notes) that rank 0 writes to ``out/summary.md``.

    ``data`` replaces each section's default data set where it allows it; ``quick`` divides
    iteration counts by 20 (see `iters`), for smoke tests of the scripts themselves.
    """

    def __init__(self, comm, out: str | Path, *, data: str | None = None, quick: bool = False):
        self.comm, self.out, self.count = comm, Path(out), 0
        self.data, self.quick = data, quick
        self.summary: list[str] = []
        if comm.rank == 0:
            os.makedirs(self.out, exist_ok=True)
        comm.Barrier()

    def __call__(self, algorithm: str, defaults: dict, *args) -> object:
        self.count += 1
        trace = self.out / f"{self.count:02d}-{algorithm}.h5"
        # a rerun of the experiment replaces its earlier traces
        rc = run_main(algorithm, ["--trace", str(trace), "--progress", "off", "--overwrite",
                                  "--quiet", *map(str, args)], self.comm, defaults=defaults)
        if rc != 0:
            raise SystemExit(f"run {trace} ended with exit status {rc}")
        self.comm.Barrier()
        return read_trace(trace) if self.comm.rank == 0 else None

    def iters(self, n: int) -> int:
        """``n`` steps, or ``max(10, n // 20)`` with ``--quick``."""
        return max(10, n // 20) if self.quick else n

    def dataset(self, default: str) -> str:
        """The ``--data`` given on the command line, else ``default``."""
        return self.data or default

    def table(self, title: str, header: list, rows: list) -> None:
        """Print a Markdown table (rank 0) and keep it for the summary."""
        self.note(f"### {title}\n\n{analyze.markdown_table(header, rows)}\n")

    def figure(self, name: str, traces: Sequence, labels: Sequence[str], caption: str,
               **plot) -> None:
        """Rank 0: ``out/name.png`` of ``traces`` (keywords go to `mpicomp.analyze.plot`), linked
        in the summary under ``caption``."""
        if self.comm.rank == 0:
            analyze.plot(traces, self.out / f"{name}.png", labels=labels, **plot)
            self.note(f"![{caption}]({name}.png)\n\n*{caption}*\n")

    def note(self, text: str) -> None:
        if self.comm.rank == 0:
            print(f"\n{text}", flush=True)
            self.summary.append(text)

    def write_summary(self, title: str, command: str) -> Path:
        """Rank 0 writes ``out/summary.md``: the title, the command and everything noted."""
        path = self.out / "summary.md"
        if self.comm.rank == 0:
            head = [f"# {title}", "", f"`{command}` on {self.comm.size} ranks; traces and figures "
                    "in this directory.", ""]  # the command as run, options included
            path.write_text("\n".join(head + self.summary) + "\n", encoding="utf-8")
        return path


def excess(t, last: int = 1) -> float:
    """Mean of F − F* over the last ``last`` rows."""
    return float(np.mean(t["loss"][-last:]) - t.attrs["f_star"])


def per_worker_step(t, column: str = "bits_up") -> float:
    """``column`` (a cumulative count, all ranks) per worker and step at the end of the run."""
    return float(t[column][-1] / t["step"][-1] / t.world_size)


def bits_to_reach(t, tol: float, directions: Sequence[str] = ("bits_up", "bits_down")) -> float:
    """Bits (up + down by default, all ranks) at the first row with F − F* < tol; NaN if none."""
    hit = np.flatnonzero(t["loss"] - t.attrs["f_star"] < tol)
    return float(sum(t[c][hit[0]] for c in directions)) if hit.size else float("nan")


def shown(value: float, spec: str = ".3g") -> str:
    """``value`` formatted for a table, or "not reached" for NaN (a tolerance never met)."""
    return "not reached" if np.isnan(value) else format(value, spec)


def main(module: str, description: str, default_out: str, sections: Sequence[Callable],
         argv: Sequence[str] | None = None, comm=None, *, takes_data: bool = True) -> int:
    """The command line of a reproduction: ``--out DIR`` (default ``results/<default_out>``),
    ``--data SPEC`` (when ``takes_data``), ``--quick``; then each ``section(run, comm)`` with one
    `Runner`, and the summary in ``DIR/summary.md``. An exception on any rank (a failed run, a
    figure rank 0 cannot draw) prints its traceback and aborts the whole MPI job."""
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--out", default=os.path.join("results", default_out),
                        help="directory for traces, figures and summary.md "
                        f"(default results/{default_out})")
    if takes_data:
        parser.add_argument("--data",
                            help="binary data set instead of the default (e.g. libsvm:a9a)")
    parser.add_argument("--quick", action="store_true", help="1/20 of the steps: a smoke test")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        analyze.pyplot()  # on every rank, before any run: the figures need matplotlib
        run = Runner(comm, args.out, data=getattr(args, "data", None), quick=args.quick)
        for section in sections:
            section(run, comm)
        path = run.write_summary(description, " ".join(
            [f"mpiexec -n {comm.size} python -m {module}", *map(shlex.quote, argv)]))
    except BaseException as exc:
        if comm.size > 1 and not isinstance(exc, KeyboardInterrupt):
            traceback.print_exc()
            sys.stderr.flush()
            comm.Abort(1)
        raise
    if comm.rank == 0:
        print(f"\nsummary: {path}", file=sys.stderr)
    return 0
