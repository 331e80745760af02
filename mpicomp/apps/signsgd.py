"""signSGD / Signum with majority vote: ``mpiexec -n 4 python -m apps.signsgd``.

1 bit a coordinate up and down through a parameter server (``--topology allgather`` or
``bitsliced`` for the serverless votes). Default: ℓ2-regularised logistic regression on
synthetic data drawn alike on every rank (the vote's theory assumes it), minibatches of 32 per
worker, signSGD (``--momentum 0.9`` for Signum), a constant step δ = 0.01. Fault injection:
``--byzantine K --attack flip|random`` makes the last K ranks send flipped or random signs.
"""

from __future__ import annotations

from mpicomp.apps import app_main

DEFAULTS = {
    "data": "synthetic:logistic,n=4096,d=64,h=0",
    "batch": 32,
    "lr": 0.01,
    "iters": 300,
}

main = app_main("signsgd", "signsgd", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
