"""Which kernels run: the compiled ones (`numba_kernels`) or their NumPy twins (`numpy_kernels`).

This is the one place that chooses. `backend` returns the kernel set in use, and an operator
calls its entry point whichever it is, e.g. ``kernels.backend().dither_levels(...)``. The two
modules have the same entry points, with the same arguments, writing the same bytes (the tests
check that):

    all_finite, copy_finite, norms, pack_fields, unpack_fields, sign_pack, sign_unpack,
    dither_levels, signed_level_values, natural_dither_levels, symbol_values, natural_pack,
    natural_unpack, natural_add32, block_extremes, uniform_levels, uniform_values,
    indices_at_least, fp16_pack, fp16_unpack, bf16_pack, bf16_unpack, clip_bounds

Thread count: `set_threads` / `threads` (``MPICOMP_THREADS``, read on first use; default 1)
choose how many threads the compiled kernels that have a multi-threaded form use (`threads`
module); the bytes do not depend on it.

Numba is optional. The compiled kernels are used when it is installed, unless the environment
variable ``MPICOMP_KERNELS=numpy`` (read on first use, not at import) or `forced` says
otherwise. The sequential coders (`coding`: Elias, Golomb) have no vectorised form: they are
compiled whenever Numba is installed, and plain Python (correct, slow) without it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import ModuleType

from . import numba_kernels, numpy_kernels
from .jit import HAVE_NUMBA
from .threads import ENV_VAR as THREADS_ENV_VAR
from .threads import set_threads, threads

__all__ = ["KERNEL_CHOICES", "ENV_VAR", "THREADS_ENV_VAR", "active", "backend", "shared", "forced",
           "set_threads", "threads"]

KERNEL_CHOICES = ("numba", "numpy")
#: the environment variable that picks the kernels: "numba" (the default) or "numpy"
ENV_VAR = "MPICOMP_KERNELS"

_use_numba: bool | None = None  # None: not decided yet (`active` reads ENV_VAR)


def active() -> bool:
    """True when the compiled Numba kernels are in use.

    Raises
    ------
    ValueError
        ``MPICOMP_KERNELS`` holds something else than ``numba`` or ``numpy``.
    """
    global _use_numba
    if _use_numba is None:
        choice = os.environ.get(ENV_VAR, "numba")
        if choice not in KERNEL_CHOICES:
            raise ValueError(f"{ENV_VAR}={choice!r}: choose one of {', '.join(KERNEL_CHOICES)}")
        _use_numba = HAVE_NUMBA and choice == "numba"
    return _use_numba


def backend() -> ModuleType:
    """The kernel set in use: `numba_kernels` when `active`, else `numpy_kernels`."""
    return numba_kernels if active() else numpy_kernels


def shared() -> ModuleType:
    """The kernels whose results both paths share: `numba_kernels` whenever Numba is installed
    (also under ``forced("numpy")``), so both paths quantise with the very same block norms."""
    return numba_kernels if HAVE_NUMBA else numpy_kernels


@contextmanager
def forced(kind: str):
    """Temporarily use ``"numba"`` or ``"numpy"`` kernels (tests and benchmarks)."""
    global _use_numba
    if kind not in KERNEL_CHOICES:
        raise ValueError(f"kernel kind {kind!r}: choose one of {', '.join(KERNEL_CHOICES)}")
    if kind == "numba" and not HAVE_NUMBA:
        raise RuntimeError("numba is not installed")
    old, _use_numba = _use_numba, kind == "numba"
    try:
        yield
    finally:
        _use_numba = old
