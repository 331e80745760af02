"""Run by test_harness.py as a plain ``python -m pytest`` on this file."""
import sys


def test_serial_run_leaves_mpi_alone(mpi_shared_tmp, mpi_skip_unless):
    mpi_skip_unless(True, "never")
    assert "mpi4py.MPI" not in sys.modules
