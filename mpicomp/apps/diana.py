"""DIANA on compressed gradient differences: ``mpiexec -n 4 python -m apps.diana``.

Default: ℓ2-regularised logistic regression on heterogeneous synthetic data (one data
distribution per rank), ℓ∞ random dithering with one level (2 bits a coordinate), the exact
mean sent back by a parameter server, α and γ from theory. Finishes in seconds at 4 ranks.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mpicomp.apps import command
from mpicomp.run import main as run_main

DEFAULTS = {
    "data": "synthetic:logistic,n=4096,d=64,h=1",
    "compressor": "dither:p=inf,s=1",
    "iters": 300,
}


def main(argv: Optional[Sequence[str]] = None, comm=None) -> int:
    return run_main("diana", argv, comm, defaults=DEFAULTS, prog=command("diana"))


if __name__ == "__main__":
    raise SystemExit(main())
