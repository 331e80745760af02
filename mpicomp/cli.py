"""The ``mpicomp`` command: one subcommand per app, plus ``analyze``, ``bench`` and ``compile``.

::

    mpiexec -n 4 mpicomp diana --iters 500        # = python -m mpicomp.apps.diana --iters 500
    mpicomp analyze diana.h5 --plot diana.png     # = python -m mpicomp.analyze ...
    mpicomp bench compressors --d 1048576         # = python -m mpicomp.bench ...
    mpicomp compile                               # = python -m mpicomp.compile

Installed as a console script with the package; ``python -m mpicomp`` is the same command.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .apps import APPS

TOOLS = {"analyze": "mpicomp.analyze", "bench": "mpicomp.bench.__main__",
         "compile": "mpicomp.compile"}


def usage() -> str:
    return (f"usage: mpicomp {{{','.join(APPS)},{','.join(TOOLS)}}} [ARGS...]\n\n"
            "Communication-compressed distributed optimisation on MPI (mpicomp "
            f"{__version__}).\n\n"
            f"apps (run under mpiexec; '--help' lists each one's settings):\n  {', '.join(APPS)}\n"
            "tools:\n  analyze  summaries, CSV and figures of traces\n"
            "  bench    benchmarks (compressors, collectives, step, model, memory, startup)\n"
            "  compile  compile the kernels once for this machine\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand named first in ``argv``; returns its exit status (2: unknown one)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"mpicomp {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name in APPS:
        return importlib.import_module(f"mpicomp.apps.{name}").main(rest)
    if name in TOOLS:
        return importlib.import_module(TOOLS[name]).main(rest)
    print(f"mpicomp: unknown command {name!r}; choose one of {', '.join((*APPS, *TOOLS))}",
          file=sys.stderr)
    return 2
