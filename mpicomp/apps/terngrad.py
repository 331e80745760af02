"""TernGrad-SGD, i.e. DCGD with ternary gradients: ``mpiexec -n 4 python -m apps.terngrad``.

Wen et al., NeurIPS 2017: per-block ℓ∞ scaling and levels {−1, 0, 1} (2 bits, or ``pack=trits``
for five trits a byte; ``clip=2.5`` for the paper's gradient clipping, then biased). All flags
as in ``apps.dcgd``.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mpicomp.apps import command
from mpicomp.apps.dcgd import main as dcgd_main


def main(argv: Optional[Sequence[str]] = None, comm=None) -> int:
    return dcgd_main(argv, comm, defaults={"compressor": "terngrad"}, prog=command("terngrad"))


if __name__ == "__main__":
    raise SystemExit(main())
