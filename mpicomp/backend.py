"""Array backend: NumPy on the CPU, CuPy on the GPU.

CuPy is imported only when a caller asks for the GPU (``device="gpu"``) or hands in a CuPy
array; importing mpicomp never touches CUDA.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

DEVICES = ("cpu", "gpu")


def _cupy_if_loaded() -> ModuleType | None:
    """The cupy module if the program has already imported it, else None (never imports)."""
    return sys.modules.get("cupy")


def import_cupy() -> ModuleType:
    """Import CuPy, with an error that says how to get it."""
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "device='gpu' needs CuPy: pip install 'mpicomp[gpu]' (or the cupy wheel that "
            f"matches your CUDA); import failed with: {exc}"
        ) from exc
    return cupy


def is_gpu_array(x: Any) -> bool:
    """True if ``x`` is a CuPy array (checked without importing CuPy)."""
    cp = _cupy_if_loaded()
    return cp is not None and isinstance(x, cp.ndarray)


def get_xp(x: Any = None, device: str | None = None) -> ModuleType:
    """The array module for an array or a device name.

    Parameters
    ----------
    x : array, optional
        A NumPy or CuPy array; its module wins over ``device``.
    device : {"cpu", "gpu"}, optional
    """
    if x is not None:
        return _cupy_if_loaded() if is_gpu_array(x) else np
    if device is None or device == "cpu":
        return np
    if device == "gpu":
        return import_cupy()
    raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")


def to_host(x: Any) -> Any:
    """A NumPy view/copy of ``x``; GPU arrays are copied after their stream is synchronised."""
    if is_gpu_array(x):
        cp = _cupy_if_loaded()
        cp.cuda.get_current_stream().synchronize()
        return cp.asnumpy(x)
    return x


def to_device(x: np.ndarray, device: str) -> Any:
    """Move a host array to ``device`` ("cpu" returns it unchanged)."""
    xp = get_xp(device=device)
    return x if xp is np else xp.asarray(x)


def synchronize(x: Any = None) -> None:
    """Wait for the current CUDA stream (no-op on the CPU or when CuPy is not loaded)."""
    cp = _cupy_if_loaded()
    if cp is not None and (x is None or is_gpu_array(x)):
        cp.cuda.get_current_stream().synchronize()


def host_buffer(x: Any, gpu_aware: bool = False) -> Any:
    """The buffer to hand to MPI: the GPU array itself when the MPI is CUDA-aware, else a host copy.

    The stream is synchronised first either way, so MPI never reads a buffer still being written.
    """
    synchronize(x)
    if gpu_aware or not is_gpu_array(x):
        return x
    return to_host(x)
