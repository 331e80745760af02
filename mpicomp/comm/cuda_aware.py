"""Whether the MPI library is CUDA-aware: ``MPIX_Query_cuda_support()``.

MPICH (4.0 and later) and Open MPI (through its ``mpi-ext`` CUDA extension) both export the
function; mpi4py does not wrap it, so it is looked up with ``ctypes`` in the library that
``mpi4py.MPI`` is linked to. It is asked at run time: a CUDA-aware build can still have CUDA
support switched off (e.g. Open MPI without a CUDA-capable transport, ``MPICH_GPU_SUPPORT``).
"""

from __future__ import annotations

import ctypes


def cuda_support() -> bool | None:
    """``MPIX_Query_cuda_support() == 1``, or None when the library has no such function
    (MPI must be initialised)."""
    from mpi4py import MPI

    query = None
    for library in (MPI.__file__, None):  # linked to mpi4py, or loaded into the process
        try:
            query = ctypes.CDLL(library).MPIX_Query_cuda_support
            break
        except (OSError, AttributeError):
            continue
    if query is None:
        return None
    query.restype = ctypes.c_int
    query.argtypes = []
    return query() == 1


def check_gpu_aware(requested: bool) -> None:
    """A ValueError when ``--gpu-aware`` is asked for and this MPI cannot take device buffers
    (handing it one would crash it)."""
    if not requested:
        return
    support = cuda_support()
    if support:
        return
    from mpi4py import MPI

    library = MPI.Get_library_version().strip().splitlines()[0]
    why = ("MPIX_Query_cuda_support() returned 0" if support is False
           else "it has no MPIX_Query_cuda_support()")
    raise ValueError(
        f"--gpu-aware needs a CUDA-aware MPI, and this one ({library}) is not: {why}. Drop "
        "--gpu-aware (payloads are then staged through pinned host memory), or run with an "
        "MPI built with CUDA support (e.g. Open MPI with UCX, or MPICH with "
        "MPICH_GPU_SUPPORT_ENABLED=1)")
