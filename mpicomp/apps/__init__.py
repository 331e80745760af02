"""The apps: one module per method, ``python -m mpicomp.apps.<name>`` or ``mpicomp <name>``.

Each app is a thin wrapper around `mpicomp.run.main` with its own defaults; ``--help`` lists
every setting. Launch under MPI with ``mpiexec -n N mpicomp diana`` or
``mpiexec -n N python -m mpicomp.apps.diana``; from a checkout ``python -m apps.diana`` is the
same app (the ``apps`` folder there is an alias of this package).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

#: Every app, by its module name.
APPS = ("diana", "dcgd", "qsgd", "terngrad", "signsgd", "natural", "qadam", "efsgd", "dpsgd",
        "choco", "malcom")


def command(app: str) -> str:
    """How the user started ``app``, for help and error messages: ``mpicomp diana``,
    ``python -m apps.diana`` (a checkout) or ``python -m mpicomp.apps.diana``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name in (f"apps.{app}", f"mpicomp.apps.{app}"):
        return f"python -m {spec.name}"
    if os.path.basename(sys.argv[0] or "") == "mpicomp":
        return f"mpicomp {app}"
    return f"python -m mpicomp.apps.{app}"


def app_main(app: str, algorithm: str, defaults: dict) -> Callable[..., int]:
    """The entry point of ``app``: ``main(argv=None, comm=None) -> exit status`` (``comm``: an
    mpi4py communicator, default COMM_WORLD; the apps' contract) runs
    ``algorithm`` through `mpicomp.run.main` with the app's ``defaults``."""

    def main(argv: Sequence[str] | None = None, comm=None) -> int:
        from mpicomp.run import main as run_main

        return run_main(algorithm, argv, comm, defaults=defaults, prog=command(app))

    main.__doc__ = f"``{command(app)}``: {algorithm} with the defaults of this app (exit status)."
    main.algorithm = algorithm
    return main
