"""Bidirectional natural-compression SGD: ``mpiexec -n 4 python -m apps.natural``.

Horváth et al., "Natural compression for distributed deep learning": the workers send C_nat of
their gradients (sign and exponent, 9 bits a float32), the server sends back C_nat of their mean,
and everyone steps with it. It is DCGD with a compressing downlink (``apps.dcgd``, all flags as
there); any operator works both ways (``--compressor``, ``--downlink``). Default: float32
messages, ℓ2-regularised logistic regression on heterogeneous synthetic data, the theory step
1/(L(1 + 1/8)(1 + 1/(4n))).
"""

from __future__ import annotations

from mpicomp.apps import app_main
from mpicomp.apps.dcgd import DEFAULTS as DCGD_DEFAULTS

DEFAULTS = {**DCGD_DEFAULTS, "compressor": "natural", "downlink": "natural", "topology": "server",
            "dtype": "float32"}

main = app_main("natural", "dcgd", DEFAULTS)

if __name__ == "__main__":
    raise SystemExit(main())
