"""Sizes a run can hold, checked before anything is allocated from a file, flag or header.

A LIBSVM file whose largest feature index is 2⁴⁰, ``--batch 1000000000000`` or ``--config
/dev/zero`` must end in one message naming the size and the limit, not in a MemoryError on every
rank after minutes of growth, and a FIFO must not block every rank.
"""

from __future__ import annotations

import os
import stat

#: float64 vectors of length d that a rank holds at most (model, gradient, shift or momentum,
#: error memory, messages and their decoded sum, workspace): the model size a run must afford.
VECTORS_PER_RANK = 8

#: Largest run configuration (TOML) file read, in bytes.
CONFIG_MAX_BYTES = 1 << 20


def memory_bytes() -> int:
    """Physical memory of this machine in bytes (a large number where the system cannot say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX systems
        return 1 << 62


def check_fits(what: str, nbytes: int) -> None:
    """ValueError when ``nbytes`` (the memory ``what`` needs on one rank) exceeds this machine's
    physical memory; the message gives both sizes."""
    limit = memory_bytes()
    if nbytes > limit:
        raise ValueError(f"{what} needs {nbytes / 2**30:.3g} GiB per rank, more than this "
                         f"machine's {limit / 2**30:.3g} GiB of memory")


def check_dimension(what: str, dim: int) -> None:
    """`check_fits` for a model of ``dim`` coordinates (``VECTORS_PER_RANK`` float64 vectors)."""
    check_fits(f"{what}: a model of {dim} coordinates", VECTORS_PER_RANK * 8 * int(dim))


def check_regular_file(path: str | os.PathLike[str], what: str,
                       max_bytes: int | None = None) -> None:
    """ValueError unless ``path`` is a regular file (not a FIFO, device or directory, which would
    block or never end) of at most ``max_bytes``; OSError when it cannot be looked at."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{what} {os.fspath(path)} is not a regular file (a directory, FIFO or "
                         "device); name a file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise ValueError(f"{what} {os.fspath(path)} has {info.st_size} bytes, more than the "
                         f"{max_bytes} a {what} may have")
