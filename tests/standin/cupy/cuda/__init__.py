"""``cupy.cuda`` of the stand-in: streams, events, devices and pinned host memory.

Every synchronisation (`Stream.synchronize`, `Event.synchronize`, `Device.synchronize`,
``runtime.deviceSynchronize``) is counted as ``sync``; every `alloc_pinned_memory` as
``pinned_allocs``. All streams have ``ptr == 0`` (nothing here is a real CUDA handle).
"""

from __future__ import annotations

from .. import _counters
from . import device, runtime
from .device import Device

__all__ = ["Device", "Event", "ExternalStream", "PinnedMemoryPointer", "Stream",
           "alloc_pinned_memory", "device", "get_current_stream", "get_elapsed_time",
           "is_available", "runtime"]


class Stream:
    """A CUDA stream: a context manager that makes it the current stream.

    Parameters
    ----------
    null : bool
        The null (default) stream; ``Stream.null`` is that one.
    non_blocking, ptds : bool
        Accepted for CuPy's signature.
    """

    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False):
        self.ptr = 0
        self._previous: list[Stream] = []

    def synchronize(self) -> None:
        """Wait for the work queued on this stream (counted as ``sync``)."""
        _counters.count("sync")

    @property
    def done(self) -> bool:
        """True: the stand-in has no pending work."""
        return True

    def record(self, event: Event | None = None) -> Event:
        """Record ``event`` (a new one when None) on this stream."""
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        """Make later work on this stream wait for ``event`` (no host wait, not counted)."""

    def use(self) -> Stream:
        """Make this the current stream."""
        global _current
        _current = self
        return self

    def __enter__(self) -> Stream:
        global _current
        self._previous.append(_current)
        _current = self
        return self

    def __exit__(self, *exc) -> None:
        global _current
        _current = self._previous.pop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ptr} (device 0)>"


class ExternalStream(Stream):
    """A stream made from a raw handle ``ptr`` (kept as given)."""

    def __init__(self, ptr: int, device_id: int = -1):
        super().__init__()
        self.ptr = int(ptr)


Stream.null = Stream(null=True)
_current: Stream = Stream.null


def get_current_stream(device_id: int = -1) -> Stream:
    """The current stream (``Stream.null`` unless a `Stream` is in use)."""
    return _current


class Event:
    """A CUDA event.

    Parameters
    ----------
    block, disable_timing, interprocess : bool
        Accepted for CuPy's signature.
    """

    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False):
        self.ptr = 0

    def record(self, stream: Stream | None = None) -> None:
        """Record the event on ``stream`` (the current stream when None)."""

    def synchronize(self) -> None:
        """Wait for the event (counted as ``sync``)."""
        _counters.count("sync")

    @property
    def done(self) -> bool:
        """True: the stand-in has no pending work."""
        return True


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds between two recorded events: always 0.0 in the stand-in."""
    return 0.0


class PinnedMemoryPointer(bytearray):
    """Page-locked host memory: a bytearray (``numpy.frombuffer`` accepts it)."""

    def size(self) -> int:
        """Bytes allocated."""
        return len(self)


def alloc_pinned_memory(size: int) -> PinnedMemoryPointer:
    """Allocate ``size`` bytes of pinned host memory (counted as ``pinned_allocs``)."""
    _counters.count("pinned_allocs")
    return PinnedMemoryPointer(int(size))


def is_available() -> bool:
    """True: the stand-in always has its one device."""
    return True
