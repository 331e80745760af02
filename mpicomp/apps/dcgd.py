"""DCGD (distributed compressed gradient descent): ``mpiexec -n 4 python -m apps.dcgd``.

Default: the same problem as ``apps.diana`` with QSGD (4 levels, ℓ2 norm) and the theory step,
so the two traces compare DCGD's noise floor with DIANA's exact convergence.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mpicomp.apps import command
from mpicomp.run import main as run_main

DEFAULTS = {
    "data": "synthetic:logistic,n=4096,d=64,h=1",
    "compressor": "qsgd:s=4",
    "iters": 300,
}


def main(argv: Optional[Sequence[str]] = None, comm=None, *, defaults: Optional[dict] = None,
         prog: str = "") -> int:
    return run_main("dcgd", argv, comm, defaults={**DEFAULTS, **(defaults or {})},
                    prog=prog or command("dcgd"))


if __name__ == "__main__":
    raise SystemExit(main())
