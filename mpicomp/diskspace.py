"""Writing HDF5 files that a full disk cannot damage.

HDF5 does not survive a failed write well: a write that needs new file space on a full disk
fails inside HDF5's caches, h5py reports it only when an object is released ("Exception ignored
in ObjectID.__dealloc__") or at the next flush, and closing the file afterwards writes its dirty
metadata again, which can leave the file unreadable or crash the process. So mpicomp's writers

1. check the free space of the file system before each write that may need more
   (`check_free_space`): a run stops, with its files as last flushed, before HDF5 meets ENOSPC;
2. flush after each write with the objects they use held open, so a failure the check could not
   foresee (a quota, another process filling the disk) raises at once; and
3. then `abandon` the file: its descriptor is pointed at ``/dev/null`` before it is closed, so
   HDF5's closing writes go nowhere and the file keeps what its last successful flush wrote.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import h5py


class DiskFullError(OSError):
    """Too little free space for a write, found before writing."""


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes free to an unprivileged user on the file system holding ``path`` (or its folder)."""
    target = os.fspath(path)
    while not os.path.exists(target):
        parent = os.path.dirname(os.path.abspath(target))
        if parent == target:
            break
        target = parent
    st = os.statvfs(target)
    return st.f_bavail * st.f_frsize


def check_free_space(path: str | os.PathLike[str], needed: int, what: str) -> None:
    """DiskFullError unless the file system of ``path`` has ``needed`` bytes free for ``what``."""
    free = free_bytes(path)
    if free < needed:
        raise DiskFullError(f"{what}: only {free} bytes free on the file system of "
                            f"{os.fspath(path)}, {needed} needed")


def failure_text(exc: BaseException) -> str:
    """``exc``'s message on one line (HDF5's span several)."""
    return " ".join(str(exc).split())


def abandon(f: h5py.File, held: list | dict | None = None) -> None:
    """Close ``f`` after a failed write without writing anything more to its file.

    ``held``: the caller's container of open objects of ``f`` (datasets), emptied here once the
    file's descriptor no longer reaches the file (releasing them writes their caches).
    """
    try:
        fd = f.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except Exception:  # not the POSIX (sec2) driver: close as it is
        pass
    if held is not None:
        held.clear()
    try:
        f.close()
    except Exception:
        pass
