"""EF-SGD, compressed SGD with error feedback: ``mpiexec -n 4 python -m apps.efsgd``.

Any operator, biased ones included (Karimireddy et al. 2019, "Error feedback fixes SignSGD"):
default the scaled sign (EF-signSGD, 1 bit a coordinate plus one float), on ℓ2-regularised
logistic regression on heterogeneous synthetic data with full gradients and γ = 0.5.
"""

from __future__ import annotations

from mpicomp.apps import app_main

DEFAULTS = {
    "data": "synthetic:logistic,n=4096,d=64,h=1",
    "compressor": "scaled_sign",
    "lr": 0.5,
    "iters": 300,
}

main = app_main("efsgd", "efsgd", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
