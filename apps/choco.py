"""APPDOC"""

from __future__ import annotations

from typing import Optional, Sequence

from mpicomp.run import main as run_main

DEFAULTS = {
    "data": "synthetic:logistic,n=4096,d=256,h=1,density=0.1",
    "l1": 0.01,
    "lr": 0.5,
    "iters": 300,
}


def main(argv: Optional[Sequence[str]] = None, comm=None) -> int:
    return run_main("choco", argv, comm, defaults=DEFAULTS, prog="python -m apps.choco")


if __name__ == "__main__":
    raise SystemExit(main())
