"""TernGrad-SGD, i.e. DCGD with ternary gradients: ``mpiexec -n 4 python -m apps.terngrad``.

Wen et al., NeurIPS 2017: per-block ℓ∞ scaling and levels {−1, 0, 1} (2 bits, or ``pack=trits``
for five trits a byte; ``clip=2.5`` for the paper's gradient clipping, then biased). All flags
as in ``apps.dcgd``.
"""

from __future__ import annotations

from mpicomp.apps import app_main
from mpicomp.apps.dcgd import DEFAULTS as DCGD_DEFAULTS

DEFAULTS = {**DCGD_DEFAULTS, "compressor": "terngrad"}

main = app_main("terngrad", "dcgd", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
