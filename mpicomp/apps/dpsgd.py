"""D-PSGD, decentralised SGD with exact gossip: ``mpiexec -n 4 python -m apps.dpsgd``.

No server: every rank keeps its own model and averages it with its neighbours' in the graph
(``--topology ring|torus|hypercube|complete|star|erdos_renyi|edges:PATH``, Metropolis weights).
Default: ℓ1-regularised logistic regression (λ1 = 0.01) on heterogeneous synthetic data with a
sparse planted model (10 % of d = 256), a ring, full local gradients, η = 0.5. The trace reports
the network average x̄ and its consensus error.
"""

from __future__ import annotations

from mpicomp.apps import app_main

DEFAULTS = {
    "data": "synthetic:logistic,n=4096,d=256,h=1,density=0.1",
    "l1": 0.01,
    "lr": 0.5,
    "iters": 300,
}

main = app_main("dpsgd", "dpsgd", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
