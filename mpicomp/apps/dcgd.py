"""DCGD (distributed compressed gradient descent): ``mpiexec -n 4 python -m apps.dcgd``.

Default: the same problem as ``apps.diana`` with QSGD (4 levels, ℓ2 norm) and the theory step,
so the two traces compare DCGD's noise floor with DIANA's exact convergence.
"""

from __future__ import annotations

from mpicomp.apps import app_main

DEFAULTS = {
    "data": "synthetic:logistic,n=4096,d=64,h=1",
    "compressor": "qsgd:s=4",
    "iters": 300,
}

main = app_main("dcgd", "dcgd", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
