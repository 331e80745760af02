"""GPU kernels of the fixed-size operators (Numba's CUDA target), and how they are launched.

Each kernel writes the same bytes as its CPU twin in `mpicomp.compress.numba_kernels` for the
same input, key and block scales: coordinate ``j``'s random word is ``splitmix64(key, j >> 1)``
(`counter_rng`), a pure function of ``(key, j)``, so any thread can draw it. Packing runs one
thread per output byte, which gathers the fields whose bits fall in that byte; decoding runs one
thread per coordinate.

Kernels take device arrays: CuPy arrays (through ``__cuda_array_interface__``), Numba device
arrays, or NumPy arrays under the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which runs
them on the CPU for the tests. They never synchronise and never copy to the host: a kernel that
meets a value it must reject records the first such coordinate in a device ``status`` array
(`STATUS_FIELDS`) with an atomic minimum, and the caller reads it when it stages the payload.

Kernels are compiled on first use and cached on disk (``cache=True``: in ``__pycache__`` beside
these modules, or Numba's user cache directory where that is read-only), once per compute
capability, so a run's ranks compile only the first time. Importing this package imports
``numba.cuda``; nothing in mpicomp does so unless the device path
is used.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import config, cuda

#: threads per block of every launch
THREADS = 256
#: ``status[NON_FINITE]``: the first coordinate whose input is NaN/Inf;
#: ``status[REJECTED]``: the first whose finite input the operator cannot send (or, when
#: decoding, whose field or value is corrupted); ``NONE`` means there was none
NON_FINITE, REJECTED = 0, 1
STATUS_FIELDS = 2
NONE = np.iinfo(np.int64).max
#: kernels run under the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)
SIMULATED = bool(config.ENABLE_CUDASIM)


def kernel_array(a):
    """The object a kernel is launched with for the argument ``a``: a CuPy array as a Numba
    device array viewing its memory without synchronising its stream (every kernel runs on
    CuPy's current stream, after the CuPy work that produced its inputs; Numba would otherwise
    block the host on each launch); what a stand-in array offers through
    ``__mpicomp_kernel_array__`` (the test suite's CuPy stand-in hands over its NumPy storage,
    for the simulator); anything else as it is."""
    unwrap = getattr(a, "__mpicomp_kernel_array__", None)
    if unwrap is not None:
        return unwrap()
    if not SIMULATED and hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a, sync=False)
    return a


def _stream():
    """CuPy's current stream as a Numba stream (0, the default stream, without CuPy or under
    the simulator)."""
    cp = sys.modules.get("cupy")
    if cp is None or SIMULATED:
        return 0
    return cuda.external_stream(cp.cuda.get_current_stream().ptr)


def launch(kernel, n: int, *args) -> None:
    """Run ``kernel`` over ``n`` threads (blocks of `THREADS`, or one block of ``n``) on CuPy's
    current stream, with ``args`` passed through `kernel_array`."""
    threads = min(THREADS, n)
    launch_blocks(kernel, -(-n // THREADS), threads, *args)


def launch_blocks(kernel, blocks: int, threads: int, *args) -> None:
    """Run ``kernel`` on ``blocks`` CUDA blocks of ``threads`` threads on CuPy's current
    stream, with ``args`` passed through `kernel_array` (nothing when ``blocks`` is 0)."""
    if blocks > 0 and threads > 0:
        kernel[blocks, threads, _stream()](*(kernel_array(a) for a in args))


def new_status(xp):
    """A fresh ``status`` array in the namespace ``xp``: `STATUS_FIELDS` int64 set to `NONE`."""
    return xp.full(STATUS_FIELDS, NONE, dtype=xp.int64)
