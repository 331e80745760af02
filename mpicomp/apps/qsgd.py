"""QSGD-SGD, i.e. DCGD with the QSGD quantiser: ``mpiexec -n 4 python -m apps.qsgd``.

Alistarh et al., NeurIPS 2017: ℓ2 random dithering with ``s`` levels (default 4; add
``coder=elias`` for the Elias-coded wire format). All flags as in ``apps.dcgd``.
"""

from __future__ import annotations

from mpicomp.apps import app_main
from mpicomp.apps.dcgd import DEFAULTS as DCGD_DEFAULTS

DEFAULTS = {**DCGD_DEFAULTS, "compressor": "qsgd:s=4"}

main = app_main("qsgd", "dcgd", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
