"""``cupy.cuda.runtime`` of the stand-in: one device, CUDA 13.0 (none, like a machine without
a driver, when the environment sets ``MPICOMP_STANDIN_NO_DEVICE=1``)."""

from __future__ import annotations

import os

from .. import _counters

is_hip = False


class CUDARuntimeError(RuntimeError):
    """An error of the (simulated) CUDA runtime."""


def getDeviceCount() -> int:  # noqa: N802 - CuPy's name
    """Number of devices: 1 (or the error CuPy raises without a driver)."""
    if os.environ.get("MPICOMP_STANDIN_NO_DEVICE") == "1":
        raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient "
                               "for CUDA runtime version")
    return 1


def runtimeGetVersion() -> int:  # noqa: N802 - CuPy's name
    """CUDA runtime version: 13000."""
    return 13000


def driverGetVersion() -> int:  # noqa: N802 - CuPy's name
    """CUDA driver version: 13000."""
    return 13000


def getDevice() -> int:  # noqa: N802 - CuPy's name
    """The current device: 0."""
    return 0


def setDevice(device: int) -> None:  # noqa: N802 - CuPy's name
    """Select ``device`` (only 0 exists)."""
    if int(device) != 0:
        raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")


def deviceSynchronize() -> None:  # noqa: N802 - CuPy's name
    """Wait for the device (counted as ``sync``)."""
    _counters.count("sync")


def getDeviceProperties(device: int) -> dict:  # noqa: N802 - CuPy's name
    """A few properties of ``device``."""
    setDevice(device)
    return {"name": b"mpicomp CuPy stand-in", "major": 9, "minor": 0,
            "totalGlobalMem": 1 << 34, "multiProcessorCount": 1}
