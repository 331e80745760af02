"""One live run per trace: an exclusive lock file beside it, whatever HDF5's own locking says.

HDF5 file locking is often switched off on Lustre and NFS (``HDF5_USE_FILE_LOCKING=FALSE``), and
it only guards an open file: two runs given the same ``--trace`` would both write it and one
run's results would be lost. Rank 0 of a run therefore claims ``TRACE.lock`` with an exclusive
create (``O_CREAT | O_EXCL``, atomic on local file systems, NFSv3+ and Lustre) before it opens
the trace, writes its host, process id and start time into it, and removes it when the run
ends. A lock whose owner is gone — same host, no such process (a run killed by SIGKILL or
``MPI_Abort``) — is stale and taken over. A lock from another host cannot be checked from here:
the run refuses and the message says which file to remove once that run has ended (the SLURM
scripts do so for their own job's trace, whose previous start is known to be over).
"""

from __future__ import annotations

import json
import os
import socket
import time


class TraceLockError(RuntimeError):
    """The trace belongs to another live run (or to one whose liveness cannot be checked)."""


def lock_path(trace: str | os.PathLike[str]) -> str:
    """The lock file of ``trace``: ``TRACE.lock`` beside it."""
    return os.fspath(trace) + ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class TraceLock:
    """An exclusive claim on a trace path by this process; `acquire`, then `release`.

    Parameters
    ----------
    trace : str or os.PathLike
        The trace the run will write; the lock is `lock_path` of it.
    """

    def __init__(self, trace: str | os.PathLike[str]):
        self.trace, self.path = os.fspath(trace), lock_path(trace)
        self.held = False
        self._mine: dict | None = None  # what this process wrote into the lock file

    def owner(self) -> dict | None:
        """What the lock file says (host, pid, started), or None when it is unreadable."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                owner = json.load(fh)
            return owner if {"host", "pid"} <= set(owner) else None
        except (OSError, ValueError, TypeError):
            return None

    def _stale(self, owner: dict | None) -> bool:
        return (owner is not None and owner["host"] == socket.gethostname()
                and not _alive(int(owner["pid"])))

    def acquire(self) -> None:
        """Create the lock file, taking over a stale one; TraceLockError when another run holds
        it, OSError when it cannot be created (a missing or read-only directory)."""
        for _ in range(3):  # a stale lock removed by a racing run: try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                if not self._stale(owner):
                    raise TraceLockError(self._refusal(owner)) from None
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            self.held = True  # from here on `release` removes it, also if writing fails
            self._mine = {"host": socket.gethostname(), "pid": os.getpid(),
                          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(self._mine, fh)
            except BaseException:
                self.release()
                raise
            return
        raise TraceLockError(f"{self.trace}: could not claim {self.path} (other runs keep "
                             "claiming it)")

    def _refusal(self, owner: dict | None) -> str:
        if owner is None:
            who = "a run whose lock file cannot be read"
        else:
            who = (f"the run of process {owner['pid']} on {owner['host']}, started "
                   f"{owner.get('started', '?')}")
        return (f"{self.trace} is being written by {who}; wait for it to end or choose another "
                f"--trace (if that run has ended, remove {self.path})")

    def release(self) -> None:
        """Remove the lock file if this process holds it (a no-op otherwise, and when the file
        is no longer this process's: removed by hand and claimed by another run)."""
        if self.held:
            self.held = False
            if self.owner() not in (None, self._mine):
                return
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
