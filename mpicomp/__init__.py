"""mpicomp: communication-compressed distributed optimisation on MPI."""

__version__ = "0.1.0"
