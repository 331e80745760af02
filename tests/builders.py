"""Algorithms built on real MPI ranks over small synthetic shards, as the MPI tests use them."""

from __future__ import annotations

import numpy as np

from mpicomp.algorithms import LocalObjective, rank_generators
from mpicomp.comm.aggregate import make_aggregator
from mpicomp.comm.communicator import Communicator
from mpicomp.comm.topology import Gossip
from mpicomp.comm.topology import get as get_graph
from mpicomp.problems import make_problem
from mpicomp.problems.data import make_synthetic, shard

SEED = 5


def dataset(n_ranks, n=None, d=12, h=1.0, density=1.0):
    # 37 samples per rank plus a remainder, so the shards differ in size and the weights matter
    return make_synthetic("logistic", n_samples=n or 37 * n_ranks + n_ranks // 2, n_features=d,
                          heterogeneity=h, groups=n_ranks, seed=3, density=density)


def local_objective(comm, data, l1=0.0, l2=0.1):
    """This rank's weighted logistic-regression share of ``data``."""
    mine = shard(data, comm.rank, comm.size)
    local = make_problem("logistic", mine.A, mine.y, l1=l1, l2=l2)
    return LocalObjective(local, comm.size * mine.n_samples / data.n_samples)


def build(comm, cls, data, compressor, topology, l1=0.0, l2=0.1, downlink=None, **kwargs):
    """``cls`` over an aggregator of ``topology`` (``comm``: an mpi4py communicator)."""
    world = Communicator(comm)
    agg = make_aggregator(topology, world, compressor, downlink=downlink)
    return cls(local_objective(comm, data, l1, l2), world, agg, **kwargs)


def build_gossip(comm, cls, data, graph="ring", *args, mixing="metropolis", l1=0.0, l2=0.1, **kwargs):
    """``cls`` (a gossip method) over ``graph`` on ``comm``; ``args`` follow the gossip object
    (CHOCO's operator)."""
    world = Communicator(comm)
    gossip = Gossip(world, get_graph(graph, comm.size), mixing)
    return cls(local_objective(comm, data, l1, l2), world, gossip, *args, **kwargs)


def run_steps(algo, x0, iters, seed=SEED, each=None):
    """The state after ``iters`` steps from ``x0``; ``each(before, state, info)`` sees every
    step (``before``: copies of the state's arrays before it)."""
    state = algo.init(x0, rank_generators(seed, algo.comm.size, algo.comm.rank))
    for _ in range(iters):
        before = {k: v.copy() for k, v in vars(state).items() if isinstance(v, np.ndarray)}
        state, info = algo.step(state)
        if each is not None:
            each(before, state, info)
    return state


def trajectory(algo, x0, iters, seed=SEED):
    """The iterates ``x⁰ … x^T`` of ``algo``."""
    xs = [np.array(x0, copy=True)]
    run_steps(algo, x0, iters, seed, each=lambda before, state, info: xs.append(state.x.copy()))
    return xs
