"""Run by test_harness.py with a short MPICOMP_TEST_TIMEOUT: rank 1 raises while rank 0 waits in
a collective; the watchdog must end the job."""
import pytest


@pytest.mark.mpi(min_size=2)
def test_rank1_raises_before_collective(comm):
    if comm.rank == 1:
        raise RuntimeError("rank 1 raised before the collective")
    comm.allreduce(1)
