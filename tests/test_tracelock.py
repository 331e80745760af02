"""The lock that gives a trace to one live run (`mpicomp.tracelock`)."""

from __future__ import annotations

import errno
import json
import os

import pytest

from mpicomp import tracelock
from mpicomp.tracelock import TraceLock, TraceLockError


def test_a_lock_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    """ENOSPC while writing the owner (a full disk): the empty lock is removed, so the next run,
    once there is space, is not refused by an unreadable lock."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracelock.json, "dump", full)
    with pytest.raises(OSError, match="No space left"):
        TraceLock(tmp_path / "t.h5").acquire()
    assert not (tmp_path / "t.h5.lock").exists()
    monkeypatch.undo()
    lock = TraceLock(tmp_path / "t.h5")
    lock.acquire()
    assert json.loads((tmp_path / "t.h5.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "t.h5.lock").exists()


def test_release_leaves_a_lock_another_run_has_claimed(tmp_path):
    lock = TraceLock(tmp_path / "t.h5")
    lock.acquire()
    other = {"host": "elsewhere", "pid": 7, "started": "later"}
    (tmp_path / "t.h5.lock").write_text(json.dumps(other))  # removed by hand, claimed anew
    lock.release()
    assert json.loads((tmp_path / "t.h5.lock").read_text()) == other
    with pytest.raises(TraceLockError, match="process 7 on elsewhere, started later"):
        TraceLock(tmp_path / "t.h5").acquire()
