"""Command line: ``python -m mpicomp.bench compressors [--d N] [--repeat R] [--json FILE]``."""

from __future__ import annotations

import argparse
import os
import sys

# one core, as the benchmark specifies: pin BLAS/OpenMP pools before NumPy loads them
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mpicomp.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True, metavar="{compressors}")
    comp = sub.add_parser("compressors", help="encode/decode time of every operator vs a memory copy")
    comp.add_argument("--d", type=int, default=2**24, help="vector length (default 2^24)")
    comp.add_argument("--repeat", type=int, default=7, help="timed repeats (median is reported)")
    comp.add_argument("--ops", nargs="*", help="operator specs (default: every operator)")
    comp.add_argument("--kernels", choices=("numba", "numpy"), help="force a kernel path")
    comp.add_argument("--json", help="also write the rows to this JSON file")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.what == "compressors":
        from .compressors import main as run_compressors

        return run_compressors(args)
    return 2  # pragma: no cover - argparse rejects other choices


if __name__ == "__main__":
    sys.exit(main())
