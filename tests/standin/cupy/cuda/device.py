"""``cupy.cuda.device`` of the stand-in: `Device`."""

from __future__ import annotations

from .. import _counters
from . import runtime


class Device:
    """A CUDA device (only device 0 exists); a context manager, like CuPy's.

    Parameters
    ----------
    device : int or Device, optional
        The device id; None means the current device (0).
    """

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if not 0 <= self.id < runtime.getDeviceCount():
            raise runtime.CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    compute_capability = "90"

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def use(self) -> None:
        """Make this the current device (a no-op: there is one)."""

    def synchronize(self) -> None:
        """Wait for all work on the device (counted as ``sync``)."""
        _counters.count("sync")

    def __int__(self) -> int:
        return self.id

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("cupy.cuda.Device", self.id))

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"
