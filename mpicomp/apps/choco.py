"""CHOCO-SGD, compressed gossip of model residuals: ``mpiexec -n 4 python -m apps.choco``.

Every rank sends Q(x_i^½ − x̂_i)/τ to its graph neighbours, who keep public copies x̂ of it.
Default: the problem and graph of ``apps.dpsgd``, QSGD with 4 levels in its fixed-length code
(``qsgd:s=4``: a norm and 4 bits a coordinate), τ = 1 + ω, consensus step γ = 0.5, η = 0.5.
"""

from __future__ import annotations

from mpicomp.apps import app_main
from mpicomp.apps.dpsgd import DEFAULTS as DPSGD_DEFAULTS

DEFAULTS = {**DPSGD_DEFAULTS, "compressor": "qsgd:s=4"}

main = app_main("choco", "choco", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
