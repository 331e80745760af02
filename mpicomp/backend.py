"""Array backend: NumPy on the CPU, CuPy on the GPU, and the copies between them.

Numerical code is written once for both: it takes the array namespace of its inputs
(`namespace`: NumPy for host arrays, the Python array API namespace of anything else, through
``array-api-compat``), so a shard, a model and an algorithm's state in CuPy stay on the device.
Every copy between host and device goes through a `Runtime` (`runtime_of`), explicitly: the
payload staging of the communicator, trace rows and checkpoints. CuPy's runtime is `CupyRuntime`;
a namespace that brings its own (the test suite's strict CuPy stand-in) offers it as
``__mpicomp_runtime__``; array namespaces without a device runtime (``array_api_strict``) get
`GenericRuntime`.

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
            "device='gpu' needs CuPy for your CUDA major version: pip install "
            "'mpicomp[gpu-cuda13]' or 'mpicomp[gpu-cuda12]' (nvidia-smi shows the CUDA version); "
            f"import failed with: {exc}"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, a driver too old for this CuPy
        raise RuntimeError(f"device='gpu': CuPy {cupy.__version__} cannot reach a GPU: {exc}; "
                           "check the NVIDIA driver (nvidia-smi) and that the CuPy extra "
                           "matches its CUDA major version") from None
    if count < 1:
        raise RuntimeError("device='gpu': CuPy sees no GPU (CUDA_VISIBLE_DEVICES?)")
    return cupy


def node_rank(mpi_comm) -> int:
    """This rank's number among the ranks of its node (collective on ``mpi_comm``)."""
    from mpi4py import MPI

    local = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_rank()
    finally:
        local.Free()


def use_local_gpu(local_rank: int) -> int:
    """Make GPU ``local_rank % count`` (of those CUDA_VISIBLE_DEVICES shows) CuPy's current
    device, and Numba's, which attaches to it; returns its id. With as many ranks per node as
    GPUs, each rank has its own; a launcher that gives each task one visible GPU also works."""
    cp = import_cupy()
    gpu = local_rank % cp.cuda.runtime.getDeviceCount()
    cp.cuda.Device(gpu).use()
    return gpu


def is_sparse(A: Any) -> bool:
    """Whether ``A`` is a SciPy or ``cupyx.scipy.sparse`` matrix (without importing SciPy:
    a dense run never loads ``scipy.sparse``)."""
    return type(A).__module__.startswith(("scipy.sparse", "cupyx.scipy.sparse"))


def is_gpu_array(x: Any) -> bool:
    """True if ``x`` is a CuPy array (checked without importing CuPy)."""
    cp = _cupy_if_loaded()
    return cp is not None and isinstance(x, cp.ndarray)


def is_device_array(x: Any) -> bool:
    """True for a CuPy array, or an array of another array API namespace (one whose type has
    ``__array_namespace__``: ``array_api_strict``); False for NumPy and for array-likes that
    are not arrays of a namespace (pandas, xarray, h5py datasets), which stay host data."""
    if isinstance(x, (np.ndarray, np.generic)):
        return False
    return is_gpu_array(x) or hasattr(type(x), "__array_namespace__")


def namespace(*arrays: Any) -> ModuleType:
    """The array namespace of ``arrays``: NumPy for host arrays (and Python scalars), else the
    array API namespace ``array_api_compat.array_namespace`` gives (CuPy's through
    ``array_api_compat.cupy``)."""
    devices = [a for a in arrays if is_device_array(a)]
    if not devices:
        return np
    from array_api_compat import array_namespace

    return array_namespace(*devices)


class CupyRuntime:
    """Host↔device copies and synchronisation of CuPy, on its current stream."""

    def __init__(self, cp: ModuleType):
        self.cp = cp

    def synchronize(self) -> None:
        self.cp.cuda.get_current_stream().synchronize()

    def to_host(self, a) -> np.ndarray:
        return self.cp.asnumpy(a)  # blocking: synchronises the stream

    def to_device(self, host: np.ndarray, dtype=None):
        return self.cp.asarray(host, dtype=dtype)

    def copy_to_host(self, a, out: np.ndarray) -> None:
        """``out[:] = a`` (bytes), then wait for it (``out`` pinned: a direct DMA)."""
        a.view(np.uint8).reshape(-1).get(out=out.view(np.uint8).reshape(-1))

    def copy_to_device(self, host: np.ndarray, out) -> None:
        """``out[:] = host`` (bytes), asynchronously on the current stream: the kernels that
        read ``out`` come after it, and ``host`` must not change until the stream has passed
        it (the staging's next blocking read)."""
        out.view(np.uint8).reshape(-1).set(host.view(np.uint8).reshape(-1))

    def pinned_empty(self, nbytes: int) -> np.ndarray:
        mem = self.cp.cuda.alloc_pinned_memory(max(int(nbytes), 1))
        return np.frombuffer(mem, np.uint8, int(nbytes))


class GenericRuntime:
    """Copies of an array API namespace without a device runtime (``array_api_strict``): through
    ``to_device`` and DLPack, explicitly."""

    def __init__(self, like):
        self.device = like.device
        self.xp = namespace(like)

    def synchronize(self) -> None:
        pass

    def to_host(self, a) -> np.ndarray:
        cpu = self.xp.__array_namespace_info__().default_device()
        return np.from_dlpack(a.to_device(cpu)).copy()

    def to_device(self, host: np.ndarray, dtype=None):
        return self.xp.asarray(host, dtype=dtype, device=self.device)

    def copy_to_host(self, a, out: np.ndarray) -> None:
        host = self.to_host(a)
        out.view(np.uint8).reshape(-1)[...] = host.view(np.uint8).reshape(-1)

    def copy_to_device(self, host: np.ndarray, out) -> None:
        out[...] = self.to_device(host.view(out.dtype).reshape(out.shape))

    def pinned_empty(self, nbytes: int) -> np.ndarray:
        return np.empty(int(nbytes), np.uint8)


def runtime_of(x: Any):
    """The `Runtime` that copies ``x`` (a device array) to and from the host."""
    if is_gpu_array(x):
        cp = _cupy_if_loaded()
        custom = getattr(cp, "__mpicomp_runtime__", None)
        return custom if custom is not None else CupyRuntime(cp)
    return GenericRuntime(x)


def get_xp(x: Any = None, device: str | None = None) -> ModuleType:
    """The array module for an array or a device name (the module itself, CuPy's or NumPy's,
    not its array API namespace: for problems that call ``xp.logaddexp`` and the like).

    Parameters
    ----------
    x : array, optional
        A NumPy or CuPy array; its module wins over ``device``.
    device : {"cpu", "gpu"}, optional
    """
    if x is not None:
        if is_gpu_array(x):
            return _cupy_if_loaded()
        return namespace(x) if is_device_array(x) else np
    if device is None or device == "cpu":
        return np
    if device == "gpu":
        return import_cupy()
    raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")


def to_host(x: Any) -> Any:
    """A NumPy view/copy of ``x``; device arrays are copied (explicitly, by their runtime)
    after their stream is synchronised."""
    if is_device_array(x):
        return runtime_of(x).to_host(x)
    return x


def to_like(host: np.ndarray, like: Any) -> Any:
    """``host`` on the device of ``like`` (returned as it is when ``like`` is a host array)."""
    if not is_device_array(like):
        return host
    return runtime_of(like).to_device(np.ascontiguousarray(host))


def to_device(x: np.ndarray, device: str) -> Any:
    """Move a host array to ``device`` ("cpu" returns it unchanged)."""
    xp = get_xp(device=device)
    return x if xp is np else xp.asarray(x)
