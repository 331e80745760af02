"""QSGD-SGD, i.e. DCGD with the QSGD quantiser: ``mpiexec -n 4 python -m apps.qsgd``.

Alistarh et al., NeurIPS 2017: ℓ2 random dithering with ``s`` levels (default 4; add
``coder=elias`` for the Elias-coded wire format). All flags as in ``apps.dcgd``.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mpicomp.apps import command
from mpicomp.apps.dcgd import main as dcgd_main


def main(argv: Optional[Sequence[str]] = None, comm=None) -> int:
    return dcgd_main(argv, comm, defaults={"compressor": "qsgd:s=4"}, prog=command("qsgd"))


if __name__ == "__main__":
    raise SystemExit(main())
