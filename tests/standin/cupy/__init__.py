"""A strict CuPy stand-in for mpicomp's test suite: NumPy underneath, a GPU library on top.

Put ``tests/standin`` first on ``sys.path`` (``PYTHONPATH`` for ``mpiexec`` children) and
``import cupy`` gives this module. Its `ndarray` keeps NumPy storage but behaves like a device
array, so a test can prove that code keeps its arrays on the device and count the copies it
makes.

Refused, with a TypeError that names the implicit conversion: every implicit device→host
conversion (``numpy.asarray(a)``, ``numpy.sum(a)``, ``numpy.add(a, 1)``, pickling; the buffer
protocol, ``__cuda_array_interface__`` and ``__dlpack__`` do not exist, so ``memoryview(a)``
and MPI sends of ``a`` fail too) and every implicit host→device one (a NumPy array of
ndim ≥ 1, a buffer or a list of floats as an operand, value, index or function argument).

Counted (`counters`, `reset_counters`): ``h2d``/``h2d_bytes`` (`asarray`/`array` of host data,
`ndarray.set`, the runtime's ``to_device``/``copy_to_device``), ``d2h``/``d2h_bytes``
(`asnumpy`, `ndarray.get`, `ndarray.tolist`, `ndarray.tobytes`, the runtime's
``to_host``/``copy_to_host``), ``sync`` (stream, event and device synchronisations, and each
blocking copy to the host), ``scalar_reads`` (``float(a)``, ``int(a)``, ``bool(a)``,
``operator.index(a)``, `ndarray.item`: implicit synchronising reads that CuPy allows),
``pinned_allocs`` (``cuda.alloc_pinned_memory``). With ``MPICOMP_STANDIN_COUNTS=prefix`` in
the environment each process writes its counters to ``{prefix}.{rank}.json`` at exit.

Functions: every NumPy function and ufunc of the same name (``cupy.zeros``, ``cupy.where``,
``cupy.logaddexp``, …; ``linalg`` and ``fft`` too), on stand-in arrays, returning stand-in
arrays (0-d ones for scalars); `cuda` has streams, events, devices and pinned memory;
``__mpicomp_runtime__`` is the object mpicomp's backend uses for copies.
"""

from __future__ import annotations

import sys as _sys

import numpy as _np

# re-exported names ("x as x"): the linter cannot read the computed __all__
from . import _core, _counters
from . import cuda as cuda
from . import fft as fft
from . import linalg as linalg
from ._core import ndarray as ndarray
from ._core import ufunc as ufunc
from ._counters import counters as counters
from ._counters import reset_counters as reset_counters

__version__ = "14.0.0+standin"

_OWN = ["ndarray", "ufunc", "asarray", "array", "asnumpy", "from_dlpack", "get_array_module",
        "is_available", "get_default_memory_pool", "get_default_pinned_memory_pool", "cuda",
        "linalg", "fft"]
__all__ = sorted(set(_core.public_names(_np)) | set(_OWN))


_cache: dict = {}


def __getattr__(name: str):
    # cached apart from globals(): names such as ``any`` and ``sum`` must not shadow builtins
    if name not in _cache:
        _cache[name] = _core.namespace_attr(_np, name, __name__)
    return _cache[name]


def __dir__() -> list[str]:
    return sorted(set(__all__) | {"counters", "reset_counters", "__mpicomp_runtime__"})


def _nested_device(obj) -> bool:
    if isinstance(obj, ndarray):
        return True
    return isinstance(obj, (list, tuple)) and any(_nested_device(o) for o in obj)


def _unwrap_nested(obj):
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, (list, tuple)):
        return [_unwrap_nested(o) for o in obj]
    if isinstance(obj, _np.ndarray) and obj.ndim > 0:
        raise _core.refuse_h2d("a NumPy array inside a sequence of device arrays")
    return obj


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, blocking=False):
    """A device array from ``obj``.

    A stand-in array (or a sequence of them) is copied on the device (not counted), or
    returned as it is when ``copy=False`` and nothing changes; anything else is host data, and
    its copy to the device is counted (``h2d`` and its bytes).
    """
    if isinstance(obj, ndarray):
        result = obj._a.astype(obj.dtype if dtype is None else dtype, order=order,
                               copy=bool(copy))
        if ndmin > result.ndim:
            result = result.reshape((1,) * (ndmin - result.ndim) + result.shape)
        return obj if result is obj._a else ndarray._wrap(result)
    if _nested_device(obj):
        return ndarray._wrap(_np.array(_unwrap_nested(obj), dtype=dtype, ndmin=ndmin))
    host = _np.array(obj, dtype=dtype, order="C" if order in ("K", "A") else order,
                     copy=True, ndmin=ndmin)
    _counters.h2d(host.nbytes)
    return ndarray._wrap(host)


def asarray(a, dtype=None, order=None, *, blocking=False):
    """``a`` as a device array: itself when it already is one (cast if ``dtype`` differs),
    else a counted host→device copy (``h2d`` and its bytes)."""
    if isinstance(a, ndarray):
        return array(a, dtype=dtype, copy=False)
    return array(a, dtype=dtype, order="K" if order is None else order)


def from_dlpack(x, *, device=None, copy=None):
    """A device array sharing the memory of the stand-in array ``x`` (a copy if ``copy``);
    anything else is host data: refused (TypeError)."""
    if not isinstance(x, ndarray):
        raise _core.refuse_h2d(f"from_dlpack of a {type(x).__name__}")
    return ndarray._wrap(x._a.copy() if copy else x._a.view())


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A host copy of the device array ``a`` (``d2h`` with its bytes, and a ``sync`` when
    ``blocking``); host data is returned through ``numpy.asarray``, not counted."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    host = _np.asarray(a, order=order)
    if out is None:
        return host
    out[...] = host
    return out


def get_array_module(*args):
    """This module if any argument is a stand-in array, else NumPy."""
    return _sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


def is_available() -> bool:
    """True: the stand-in always has its one device."""
    return True


class _MemoryPool:
    """A memory pool that holds nothing."""

    def free_all_blocks(self, stream=None) -> None:
        """Release cached blocks (none)."""

    def used_bytes(self) -> int:
        """Bytes in use: 0."""
        return 0

    def total_bytes(self) -> int:
        """Bytes held: 0."""
        return 0


_MEMPOOL, _PINNED_MEMPOOL = _MemoryPool(), _MemoryPool()


def get_default_memory_pool() -> _MemoryPool:
    """The device memory pool (holds nothing)."""
    return _MEMPOOL


def get_default_pinned_memory_pool() -> _MemoryPool:
    """The pinned memory pool (holds nothing)."""
    return _PINNED_MEMPOOL


def _require_device(a, what: str) -> ndarray:
    if not isinstance(a, ndarray):
        raise TypeError(f"{what} takes a cupy.ndarray, got {type(a).__name__}")
    return a


def _require_host(a, what: str) -> _np.ndarray:
    if not isinstance(a, _np.ndarray):
        raise TypeError(f"{what} takes a numpy.ndarray, got {type(a).__name__}")
    return a


def _bytes_of(a: _np.ndarray, what: str) -> _np.ndarray:
    if not a.flags.c_contiguous:
        raise ValueError(f"{what}: a byte copy needs a C-contiguous array")
    return a.reshape(-1).view(_np.uint8)


class _MpicompRuntime:
    """The copies and synchronisation mpicomp's backend makes for stand-in arrays, counted
    as CuPy would make them (see mpicomp.backend.CupyRuntime for the real ones)."""

    def synchronize(self) -> None:
        """Wait for the current stream (``sync``)."""
        cuda.get_current_stream().synchronize()

    def to_host(self, a) -> _np.ndarray:
        """A new host copy of the device array ``a`` (``d2h`` with its bytes, and a ``sync``)."""
        return asnumpy(_require_device(a, "to_host"))

    def to_device(self, host_array, dtype=None) -> ndarray:
        """A device copy of the host array ``host_array`` (``h2d`` with its bytes)."""
        if not isinstance(host_array, (_np.ndarray, _np.generic)):
            raise TypeError(
                f"to_device takes a numpy.ndarray, got {type(host_array).__name__}")
        return array(host_array, dtype=dtype)

    def copy_to_host(self, a, out: _np.ndarray) -> None:
        """Copy the bytes of the device array ``a`` into the host array ``out`` (same nbytes,
        both C-contiguous); blocking, like CuPy's ``get(out=)``: ``d2h`` with its bytes, and a
        ``sync``."""
        src = _bytes_of(_require_device(a, "copy_to_host")._a, "copy_to_host")
        dst = _bytes_of(_require_host(out, "copy_to_host"), "copy_to_host")
        if dst.size != src.size:
            raise ValueError(f"copy_to_host: {src.size} bytes into {dst.size}")
        dst[...] = src
        _counters.d2h(src.size)
        cuda.get_current_stream().synchronize()

    def copy_to_device(self, host: _np.ndarray, out) -> None:
        """Copy the bytes of the host array ``host`` into the device array ``out`` (same
        nbytes, both C-contiguous): ``h2d`` with its bytes."""
        src = _bytes_of(_require_host(host, "copy_to_device"), "copy_to_device")
        dst = _bytes_of(_require_device(out, "copy_to_device")._a, "copy_to_device")
        if dst.size != src.size:
            raise ValueError(f"copy_to_device: {src.size} bytes into {dst.size}")
        dst[...] = src
        _counters.h2d(src.size)

    def pinned_empty(self, nbytes: int) -> _np.ndarray:
        """``nbytes`` of page-locked host memory as uint8 (``pinned_allocs``)."""
        n = int(nbytes)
        return _np.frombuffer(cuda.alloc_pinned_memory(max(n, 1)), _np.uint8, n)


__mpicomp_runtime__ = _MpicompRuntime()
