"""`compile_once`: a cold cache costs one compilation per node, not one per rank, and a failed
build neither hangs nor fails the run."""

from __future__ import annotations

import pytest
from mpi4py import MPI

import mpicomp.compile as compile_module

pytestmark = pytest.mark.mpi


def node_of(comm):
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    rank = node.Get_rank()
    node.Free()
    return rank


@pytest.mark.parametrize("already", [False, True])
def test_one_rank_a_node_compiles(comm, monkeypatch, already):
    pytest.importorskip("numba")
    calls = []
    monkeypatch.setattr(compile_module, "ready", lambda: already)
    monkeypatch.setattr(compile_module, "main", lambda argv=None: calls.append(argv) or 0)
    compile_module.compile_once(comm)
    builds = comm.allgather(len(calls))
    node_leaders = comm.allgather(node_of(comm) == 0)
    assert builds == [0 if already else int(lead) for lead in node_leaders]


def test_a_failed_build_is_reported_and_the_run_goes_on(comm, monkeypatch, capsys):
    pytest.importorskip("numba")

    def broken(argv=None):
        raise OSError("disk full")

    monkeypatch.setattr(compile_module, "ready", lambda: False)
    monkeypatch.setattr(compile_module, "main", broken)
    compile_module.compile_once(comm)  # returns on every rank
    comm.Barrier()
    if node_of(comm) == 0:
        assert "compiling the kernels failed (OSError: disk full)" in capsys.readouterr().err


def test_nothing_happens_when_compiling_ahead_is_off(comm, monkeypatch):
    monkeypatch.setenv("MPICOMP_AOT", "0")
    monkeypatch.setattr(compile_module, "ready", lambda: pytest.fail("looked for a build"))
    compile_module.compile_once(comm)


def test_a_cache_that_cannot_be_read_is_reported_not_hung_on(comm, monkeypatch, capsys):
    pytest.importorskip("numba")

    def unreadable():
        raise PermissionError("cache denied")

    monkeypatch.setattr(compile_module, "ready", unreadable)
    monkeypatch.setattr(compile_module, "main", lambda argv=None: pytest.fail("built"))
    compile_module.compile_once(comm)  # returns on every rank
    comm.Barrier()
    if node_of(comm) == 0:
        assert "PermissionError: cache denied" in capsys.readouterr().err
