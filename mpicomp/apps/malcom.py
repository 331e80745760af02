"""Malcom-PSGD, proximal SGD with source-coded compressed gossip:
``mpiexec -n 4 python -m apps.malcom``.

CHOCO-SGD's exchange of quantised model residuals, an ℓ1 proximal step that makes the models
sparse, and the vector source coder on the wire (``coder=golomb``: the count of each signed level,
then Golomb-coded runs), whose length falls with that sparsity. Default: the problem, graph and
steps of ``apps.choco`` (ℓ1-regularised logistic regression with a sparse planted model, a ring,
QSGD with 4 levels, τ = 1 + ω, γ = 0.5, η = 0.5), messages source-coded. ``--schedule sqrt``
takes η/√(t+1).
"""

from __future__ import annotations

from mpicomp.apps import app_main
from mpicomp.apps.choco import DEFAULTS as CHOCO_DEFAULTS

DEFAULTS = {**CHOCO_DEFAULTS, "compressor": "qsgd:s=4,coder=golomb"}

main = app_main("malcom", "malcom", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
