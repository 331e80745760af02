"""Quantised Adam with error feedback on a parameter server: ``mpiexec -n 4 python -m apps.qadam``.

Chen et al., "Quantized Adam with error feedback": each worker runs Adam on its gradients and
sends its step plus its error memory through the gradient quantiser ``--compressor`` (default:
scaled sign per block of 16, 1 bit a coordinate plus one float a block); the server applies the
mean and sends the weights back, exactly or on a grid (``--weight-quant uniform:bits=8,block=16``).
``--no-error-feedback`` drops the error memory. Default: ℓ2-regularised logistic regression on
heterogeneous synthetic data, minibatches of 32, η = 0.01.
"""

from __future__ import annotations

from mpicomp.apps import app_main

DEFAULTS = {
    "data": "synthetic:logistic,n=4096,d=64,h=1",
    "compressor": "scaled_sign:block=16",
    "batch": 32,
    "lr": 0.01,
    "iters": 300,
}

main = app_main("qadam", "qadam", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
