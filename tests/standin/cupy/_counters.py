"""The stand-in's counters of host↔device copies, synchronisations and scalar reads."""

from __future__ import annotations

import atexit
import json
import os

#: environment variable: a path prefix; at exit each process writes ``{prefix}.{rank}.json``
COUNTS_ENV = "MPICOMP_STANDIN_COUNTS"
#: environment variables that hold the MPI rank, by launcher (MPICH/Hydra, Open MPI, PMIx)
RANK_ENVS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
KEYS = ("h2d", "d2h", "h2d_bytes", "d2h_bytes", "sync", "scalar_reads", "pinned_allocs")

_counts = dict.fromkeys(KEYS, 0)


def count(key: str, n: int = 1) -> None:
    """Add ``n`` to counter ``key``."""
    _counts[key] += int(n)


def h2d(nbytes: int) -> None:
    """Record one host→device copy of ``nbytes`` bytes."""
    _counts["h2d"] += 1
    _counts["h2d_bytes"] += int(nbytes)


def d2h(nbytes: int) -> None:
    """Record one device→host copy of ``nbytes`` bytes."""
    _counts["d2h"] += 1
    _counts["d2h_bytes"] += int(nbytes)


def counters() -> dict[str, int]:
    """A snapshot of the counters.

    Returns
    -------
    dict
        ``h2d``, ``d2h`` (explicit copies), ``h2d_bytes``, ``d2h_bytes``, ``sync`` (stream,
        event and device synchronisations), ``scalar_reads`` (``float(a)``, ``bool(a)``,
        ``a.item()``, …: implicit synchronising reads), ``pinned_allocs``.
    """
    return dict(_counts)


def reset_counters() -> None:
    """Set every counter to zero."""
    for key in _counts:
        _counts[key] = 0


def _rank() -> int:
    for name in RANK_ENVS:
        value = os.environ.get(name)
        if value:
            return int(value)
    return 0


def _dump() -> None:
    prefix = os.environ.get(COUNTS_ENV)
    if prefix:
        with open(f"{prefix}.{_rank()}.json", "w", encoding="utf-8") as f:
            json.dump(counters(), f)


if os.environ.get(COUNTS_ENV):
    atexit.register(_dump)
