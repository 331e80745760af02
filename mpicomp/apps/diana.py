"""DIANA on compressed gradient differences: ``mpiexec -n 4 python -m apps.diana``.

Default: ℓ2-regularised logistic regression on heterogeneous synthetic data (one data
distribution per rank), ℓ∞ random dithering with one level (2 bits a coordinate), the exact
mean sent back by a parameter server, α and γ from theory. Finishes in seconds at 4 ranks.
"""

from __future__ import annotations

from mpicomp.apps import app_main

DEFAULTS = {
    "data": "synthetic:logistic,n=4096,d=64,h=1",
    "compressor": "dither:p=inf,s=1",
    "iters": 300,
}

main = app_main("diana", "diana", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
