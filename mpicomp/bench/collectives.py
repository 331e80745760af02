"""Compressed aggregation against ``MPI.Allreduce`` of the uncompressed float32 vector.

Run under MPI: ``mpiexec -n 4 python -m mpicomp.bench collectives``. Each repeat times, back to
back, an ``Allreduce`` (SUM, into a preallocated buffer) and one aggregation; each time is the
maximum over ranks (a collective is as slow as its slowest rank). Reported per row, as
"how many times better than Allreduce" (> 1 is better):

- ``wall``: median over repeats of allreduce time / aggregation time;
- ``bytes``: bytes Allreduce moves (a ring: 2(n−1)/n·4d per rank) / bytes the aggregation moved
  (the `Communicator` counters, summed over ranks);
- ``model``: network-model time of Allreduce / of the aggregation (max over ranks), on the
  chosen profile.

``twophase`` is the pipelined two-phase aggregator (`TwoPhaseAggregator`), ``twophase-collective``
the same aggregation through its two blocking collectives (``pipeline=False``): the same bytes
and results, timed in the same run.
"""

from __future__ import annotations

import json
import time

import numpy as np

from ..comm.aggregate import AllgatherAggregator, MajorityVote, ServerAggregator, TwoPhaseAggregator
from ..comm.communicator import Communicator

AGGREGATORS = ("twophase", "twophase-collective", "allgather", "server")
VOTES = ("vote-server", "vote-allgather", "vote-bitsliced")
DEFAULT_SPECS = ("sign", "natural", "qsgd:s=4")


def make(name: str, comm: Communicator, spec: str):
    """The aggregator ``name`` for operator ``spec``, as a callable ``f(x, rng)``."""
    if name.startswith("vote-"):
        vote = MajorityVote(comm, name[5:])
        return lambda x, rng, out=None: vote.vote(x)
    if name.startswith("twophase"):
        agg = TwoPhaseAggregator(comm, spec, pipeline=name == "twophase")
    elif name == "server":
        agg = ServerAggregator(comm, spec, downlink=spec)
    else:
        agg = AllgatherAggregator(comm, spec)
    return agg.reduce  # called with out= a reused array, as a training loop does


def _slowest(comm, seconds: float) -> float:
    from mpi4py import MPI

    return comm.allreduce(seconds, op=MPI.MAX)


def run(mpi_comm, sizes=(2**20, 2**24), specs=DEFAULT_SPECS, repeat: int = 5,
        network: str = "10gbe") -> list:
    """Measure every (d, operator, aggregator); rows are identical on every rank."""
    comm = Communicator(mpi_comm, network=network)
    n = comm.size
    if n < 2:
        raise ValueError("the collectives benchmark compares traffic between ranks: run it under "
                         "mpiexec with at least 2 ranks, e.g. mpiexec -n 4 python -m mpicomp.bench "
                         "collectives")
    rows = []
    for d in sizes:
        x = np.random.default_rng(comm.rank).standard_normal(d).astype(np.float32)
        out = np.empty_like(x)
        result = np.empty_like(x)
        base_bytes = n * (2 * (n - 1) * 4 * d // n)
        base_model = comm.network.allreduce(n, 4 * d)
        for spec in specs:
            names = AGGREGATORS + (VOTES if spec == "sign" else ())
            for name in names:
                reduce = make(name, comm, spec)
                rng = np.random.default_rng(1000 + comm.rank)
                reduce(x, rng)  # warm-up (JIT, buffers)
                ratios = []
                for _ in range(repeat):
                    mpi_comm.Barrier()
                    t0 = time.perf_counter()
                    mpi_comm.Allreduce(x, out)
                    t_base = _slowest(mpi_comm, time.perf_counter() - t0)
                    mpi_comm.Barrier()
                    comm.stats.reset()
                    t0 = time.perf_counter()
                    reduce(x, rng, out=result)
                    t_agg = _slowest(mpi_comm, time.perf_counter() - t0)
                    ratios.append(t_base / t_agg)
                total = comm.stats.total()
                moved = mpi_comm.allreduce(total.bytes_sent)
                model = _slowest(mpi_comm, total.model_seconds)
                rows.append(
                    {
                        "d": d,
                        "operator": spec,
                        "aggregator": name,
                        "ranks": n,
                        "wall": float(np.median(ratios)),
                        "bytes": base_bytes / moved,
                        "model": base_model / model,
                        "bytes_moved": int(moved),
                        "allreduce_bytes": int(base_bytes),
                    }
                )
    return rows


def table(rows: list, network: str) -> str:
    n = rows[0]["ranks"] if rows else 0
    lines = [
        f"{n} ranks; ratios are MPI.Allreduce(float32) / aggregation (> 1: the aggregation is "
        f"better); model: {network}",
        "",
        "| d | operator | aggregator | wall | bytes | model |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| 2^{int(np.log2(r['d']))} | `{r['operator']}` | {r['aggregator']} | "
            f"{r['wall']:.2f} | {r['bytes']:.2f} | {r['model']:.2f} |"
        )
    return "\n".join(lines)


def main(args) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rows = run(comm, sizes=[2**e for e in args.log2d], specs=args.ops or DEFAULT_SPECS,
               repeat=args.repeat, network=args.network)
    if comm.rank == 0:
        print(table(rows, args.network))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"benchmark": "collectives", "network": args.network, "rows": rows}, fh,
                          indent=1)
    return 0
