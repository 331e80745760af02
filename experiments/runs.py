"""What the experiment scripts share: app runs in this process and Markdown tables of their traces."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mpicomp.run import main as run_main
from mpicomp.trace import read_trace


class Runner:
    """Runs apps in this process, one trace each, and reads the traces on rank 0."""

    def __init__(self, comm, out: "str | Path"):
        self.comm, self.out, self.count = comm, Path(out), 0
        if comm.rank == 0:
            os.makedirs(self.out, exist_ok=True)
        comm.Barrier()

    def __call__(self, algorithm: str, defaults: dict, *args) -> "object":
        self.count += 1
        trace = self.out / f"{self.count:02d}-{algorithm}.h5"
        rc = run_main(algorithm, ["--trace", str(trace), "--progress", "off", *map(str, args)], self.comm,
                      defaults=defaults)
        if rc != 0:
            raise SystemExit(f"run {trace} ended with exit status {rc}")
        self.comm.Barrier()
        return read_trace(trace) if self.comm.rank == 0 else None


def excess(t, last: int = 1) -> float:
    """Mean of F − F* over the last ``last`` rows."""
    return float(np.mean(t["loss"][-last:]) - t.attrs["f_star"])


def bits_to_reach(t, tol: float) -> float:
    """Bits (up + down, all ranks) at the first row with F − F* < tol."""
    hit = np.flatnonzero(t["loss"] - t.attrs["f_star"] < tol)
    return float(t["bits_up"][hit[0]] + t["bits_down"][hit[0]]) if hit.size else float("nan")


def table(comm, title: str, header: list, rows: list) -> None:
    if comm.rank == 0:
        print(f"\n### {title}\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")


def main(description: str, default_out: str, sections: Sequence[Callable]) -> None:
    """The command line of an experiment script: ``--out DIR``, then each ``section(run, comm)``
    on ``COMM_WORLD`` with one `Runner` writing into ``DIR``."""
    from mpi4py import MPI

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default_out, help="directory for the traces")
    args = parser.parse_args()
    run = Runner(MPI.COMM_WORLD, args.out)
    for section in sections:
        section(run, MPI.COMM_WORLD)
