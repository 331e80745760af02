"""Device check under MPI (``mpiexec -n 2 python tests/device/mpi_check.py [d]``): the CUDA-aware
query, and an allgather of GPU-encoded payloads staged through pinned host memory, whose mean
must equal the CPU path's: bit for bit for natural and sign (the same payload bytes, the same
rank-order sum), to 1e-5 relative for qsgd and scaled_sign, whose block norms the GPU sums in
another order (the last bits of the transmitted scale may differ)."""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np
from mpi4py import MPI

import mpicomp
from mpicomp.comm.cuda_aware import cuda_support

comm = mpicomp.communicator(MPI.COMM_WORLD.Dup())
if comm.rank == 0:
    library = MPI.Get_library_version().splitlines()[0]
    print(f"MPIX_Query_cuda_support: {cuda_support()} ({library})")
d = int(sys.argv[1]) if len(sys.argv) > 1 else 100_003
failures = 0
for spec in ("natural", "qsgd:s=4,block=512", "sign", "scaled_sign"):
    x = np.random.default_rng(comm.rank).standard_normal(d).astype(np.float32)
    results = []
    for vector in (x, cp.asarray(x)):
        agg = mpicomp.make_aggregator("allgather", comm, spec)
        results.append(mpicomp.backend.to_host(
            agg.reduce(vector, np.random.default_rng(comm.rank), own=True).mean))
    exact = spec in ("natural", "sign")
    same = (np.array_equal(results[0], results[1]) if exact
            else np.allclose(results[0], results[1], rtol=1e-5, atol=0))
    failures += not same
    if comm.rank == 0:
        how = "==" if exact else "≈ (1e-5)"
        print(f"{'ok  ' if same else 'FAIL'} staged allgather of {spec}: GPU mean {how} CPU mean")
sys.exit(1 if MPI.COMM_WORLD.allreduce(failures) else 0)
