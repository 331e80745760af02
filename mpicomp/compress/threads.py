"""How many threads a compiled kernel may use: `threads`, `set_threads`, ``MPICOMP_THREADS``.

The default is 1: under MPI the ranks of a node already share its cores. With ``n > 1`` the
kernels that have a multi-threaded form (`numba_kernels`: natural compression, the dithering
levels and their decoders) split a long vector into ``n`` parts of whole chunks, one per
thread; the random word of coordinate j is a function of (key, j) alone, so every part writes
the bytes one thread would. Shorter vectors (below `MIN_PARALLEL` coordinates) and the NumPy
kernels always run on one thread.
"""

from __future__ import annotations

import os
import sys

import numpy as np

#: the environment variable that sets the thread count (read on first use): an integer ≥ 1
ENV_VAR = "MPICOMP_THREADS"
#: vectors shorter than this run on one thread (starting the pool costs more than it saves)
MIN_PARALLEL = 1 << 18

_threads: int | None = None  # None: not decided yet (`threads` reads ENV_VAR)


def check_count(n, what: str = "threads") -> int:
    """``n`` as an int if it is an integer (or its decimal text) from 1 to Numba's pool size,
    else ValueError naming it and the valid range."""
    text = n.strip() if isinstance(n, str) else None
    whole = isinstance(n, (int, np.integer)) and not isinstance(n, bool)
    value = int(n) if whole or (text is not None and text.isdigit()) else 0
    if value < 1:
        raise ValueError(f"{what}={n!r}: give an integer ≥ 1 (the compression kernels' thread "
                         "count; 1 is one thread)")
    limit = numba_pool_size() if value > 1 else None
    if limit is not None and value > limit:
        raise ValueError(
            f"{what}={n!r} exceeds the {limit} thread(s) of Numba's pool "
            f"(NUMBA_NUM_THREADS={limit}): give an integer from 1 to {limit}, or raise "
            "NUMBA_NUM_THREADS before Numba is imported"
        )
    return value


def numba_pool_size() -> int | None:
    """The most threads Numba can run (``NUMBA_NUM_THREADS``, fixed when Numba is imported);
    None without Numba."""
    if "numba" in sys.modules:
        return int(sys.modules["numba"].config.NUMBA_NUM_THREADS)
    try:
        import numba
    except ImportError:
        return None
    return int(numba.config.NUMBA_NUM_THREADS)


def threads() -> int:
    """The thread count of the compression kernels (``MPICOMP_THREADS`` on first use, else 1).

    Raises
    ------
    ValueError
        ``MPICOMP_THREADS`` is not an integer from 1 to Numba's pool size.
    """
    global _threads
    if _threads is None:
        _threads = check_count(os.environ.get(ENV_VAR, "1"), ENV_VAR)
    return _threads


def set_threads(n: int) -> int:
    """Use ``n`` threads in the kernels that have a multi-threaded form; returns the previous
    count.

    Raises
    ------
    ValueError
        ``n`` is not an integer ≥ 1, or exceeds the threads of Numba's pool.
    """
    global _threads
    n = check_count(n)
    old = _threads if _threads is not None else 1
    _threads = n
    return old


def parts(d: int) -> int:
    """How many threads a kernel over ``d`` coordinates runs on: `threads`, or 1 below
    `MIN_PARALLEL`."""
    n = threads()
    if n == 1 or d < MIN_PARALLEL:
        return 1
    import numba

    numba.set_num_threads(n)  # per calling thread in Numba: set where the kernel is called
    return n
