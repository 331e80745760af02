"""Run by test_harness.py: this module fails to import on rank 1 only."""
import pytest
from mpi4py import MPI

if MPI.COMM_WORLD.rank == 1:
    raise ImportError("this module breaks on rank 1 only")


@pytest.mark.mpi
def test_anything():
    pass
