"""mpicomp: communication-compressed distributed optimisation on MPI.

The command line (``python -m mpicomp APP ...``) runs whole experiments with traces and
checkpoints; this package's top level offers the same pieces to a script or a notebook: a
compressor, a communicator, an aggregator or a gossip graph, a rank's share of a problem, an
algorithm, and a loop that runs it. Every rank runs the same script; the calls that
communicate are collective (every rank makes them, in the same order).

Building blocks
---------------
make_compressor(spec)
    A compression operator from its spec (``"qsgd:s=4"``, ``"topk:k=0.1"``, ``"natural"``, …).
communicator(mpi_comm=None, network=None)
    A `Communicator` (byte collectives with traffic counters) over a Dup of ``COMM_WORLD``.
make_aggregator(kind, comm, compressor, downlink=None, dim=None)
    A compressed mean over the ranks: ``"server"``, ``"allgather"`` or ``"two-phase"``.
MajorityVote(comm, mode)
    signSGD's vote of the ranks' signs.
make_graph(spec, n), Gossip(comm, graph, weights)
    A graph on ``n`` ranks and neighbour exchange over it (decentralised methods).
make_synthetic(kind, ...), load_dataset(spec, ...)
    A whole data set (every rank builds the same one).
make_problem(name, A, y, ...), reference_optimum(problem)
    A loss over data, and its minimiser ``(x*, F*)`` to high precision.
local_objective(comm, data, problem, l1=0, l2=1e-3)
    This rank's weighted share of the problem, as the command line builds it.

Algorithms
----------
DCGD, DIANA, EFSGD, QAdam, Signum, DPSGD, ChocoSGD, MalcomPSGD, ALGORITHMS
    The methods (classes; ``ALGORITHMS`` maps their command-line names to them). A
    centralised method is ``cls(objective, comm, aggregator, lr=..., ...)``, signSGD
    ``Signum(objective, comm, MajorityVote(comm, mode), lr=...)``, a gossip method
    ``cls(objective, comm, gossip, [compressor,] lr=..., ...)``.
make_algorithm(name, objective, comm, compressor=None, topology=None, ...)
    The same in one call: the right exchange for the method's family.
run_steps(algo, x0, iters, seed=0, each=None), trajectory(algo, x0, iters, seed=0)
    Run an algorithm: its final state, or the list of this rank's iterates.
rank_generators(seed, size, rank), LocalObjective, Communicator, DivergenceError
    What the above are made of: per-rank random streams, the weighted objective, the
    communicator class, the error a diverging run raises.

Example
-------
DIANA with 4-level QSGD on a logistic regression whose data differ between the ranks: its
shifts learn each rank's gradient at the optimum, so it reaches ``x*`` exactly. Save as
``example.py`` and run ``mpiexec -n 4 python example.py``::

    import numpy as np
    import mpicomp

    comm = mpicomp.communicator()  # a Dup of MPI.COMM_WORLD
    data = mpicomp.make_synthetic("logistic", n_samples=800, n_features=20, heterogeneity=1.0,
                                  groups=comm.size, seed=1)
    objective = mpicomp.local_objective(comm, data, "logistic", l2=1e-2)  # this rank's shard
    aggregator = mpicomp.make_aggregator("server", comm, mpicomp.make_compressor("qsgd:s=4"))
    algo = mpicomp.DIANA(objective, comm, aggregator, lr=2.0, alpha=0.2)
    state = mpicomp.run_steps(algo, np.zeros(data.n_features), 300, seed=0)
    x_star, _ = mpicomp.reference_optimum(mpicomp.make_problem("logistic", data.A, data.y, l2=1e-2))
    if comm.rank == 0:
        print(f"|x - x*| = {np.linalg.norm(state.x - x_star):.1e}, "
              f"bytes sent by rank 0: {comm.stats.total().bytes_sent}")

``mpicomp.make_algorithm("diana", objective, comm, "qsgd:s=4", "server", lr=2.0, alpha=0.2)``
builds the same algorithm in one call.

Notes
-----
``import mpicomp`` is cheap: the names above are imported on first use (mpi4py only by what
communicates), so the command line's ``--help`` never starts MPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: public name → (module, attribute)
_EXPORTS = {
    "make_compressor": ("mpicomp.compress", "make_compressor"),
    "communicator": ("mpicomp.api", "communicator"),
    "Communicator": ("mpicomp.comm.communicator", "Communicator"),
    "make_aggregator": ("mpicomp.comm.aggregate", "make_aggregator"),
    "MajorityVote": ("mpicomp.comm.aggregate", "MajorityVote"),
    "make_graph": ("mpicomp.comm.graphs", "make_graph"),
    "Gossip": ("mpicomp.comm.gossip", "Gossip"),
    "make_synthetic": ("mpicomp.problems.data", "make_synthetic"),
    "load_dataset": ("mpicomp.problems.data", "load"),
    "make_problem": ("mpicomp.problems", "make_problem"),
    "reference_optimum": ("mpicomp.problems", "reference_optimum"),
    "local_objective": ("mpicomp.api", "local_objective"),
    "LocalObjective": ("mpicomp.algorithms", "LocalObjective"),
    "ALGORITHMS": ("mpicomp.algorithms", "ALGORITHMS"),
    "DCGD": ("mpicomp.algorithms", "DCGD"),
    "DIANA": ("mpicomp.algorithms", "DIANA"),
    "EFSGD": ("mpicomp.algorithms", "EFSGD"),
    "QAdam": ("mpicomp.algorithms", "QAdam"),
    "Signum": ("mpicomp.algorithms", "Signum"),
    "DPSGD": ("mpicomp.algorithms", "DPSGD"),
    "ChocoSGD": ("mpicomp.algorithms", "ChocoSGD"),
    "MalcomPSGD": ("mpicomp.algorithms", "MalcomPSGD"),
    "DivergenceError": ("mpicomp.algorithms", "DivergenceError"),
    "rank_generators": ("mpicomp.algorithms", "rank_generators"),
    "make_algorithm": ("mpicomp.api", "make_algorithm"),
    "run_steps": ("mpicomp.api", "run_steps"),
    "trajectory": ("mpicomp.api", "trajectory"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools see; at run time the names above load on first use
    from .algorithms import (
        ALGORITHMS,
        DCGD,
        DIANA,
        DPSGD,
        EFSGD,
        ChocoSGD,
        DivergenceError,
        LocalObjective,
        MalcomPSGD,
        QAdam,
        Signum,
        rank_generators,
    )
    from .api import communicator, local_objective, make_algorithm, run_steps, trajectory
    from .comm.aggregate import MajorityVote, make_aggregator
    from .comm.communicator import Communicator
    from .comm.gossip import Gossip
    from .comm.graphs import make_graph
    from .compress import make_compressor
    from .problems import make_problem, reference_optimum
    from .problems.data import load as load_dataset
    from .problems.data import make_synthetic
