"""Run by test_harness.py as ``mpiexec -n 2 python -m pytest --with-mpi --only-mpi`` on this file.

Expected: 2 failed, 1 passed, 1 skipped, 1 xfailed, 1 error, each reported once by rank 0.
"""
import pytest


@pytest.fixture
def broken_on_rank1(comm):
    if comm.rank == 1:
        raise RuntimeError("fixture broke on rank 1")
    yield


@pytest.mark.mpi(min_size=2)
def test_fails_on_rank1_only(comm):
    print(f"stdout of rank {comm.rank}")
    assert comm.rank != 1, f"deliberate failure on rank {comm.rank}"


@pytest.mark.mpi(min_size=2)
def test_setup_error_on_rank1_only(broken_on_rank1, comm):
    comm.Barrier()  # rank 0 must not run this: rank 1 never gets here


@pytest.mark.mpi(min_size=2)
def test_skip_on_rank1_only(comm):
    if comm.rank == 1:
        pytest.skip("a skip taken on rank 1 alone")


@pytest.mark.mpi(min_size=2)
def test_collective_skip(comm, mpi_skip_unless):
    mpi_skip_unless(comm.rank != 1, "needs something rank 1 lacks")
    comm.Barrier()


@pytest.mark.mpi(min_size=2)
@pytest.mark.xfail(reason="expected to fail on rank 1", strict=False)
def test_xfail_on_rank1(comm):
    assert comm.rank != 1


@pytest.mark.mpi(min_size=2)
def test_passes_after_all_that(comm):
    assert comm.allreduce(1) == comm.size
