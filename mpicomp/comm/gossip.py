"""Gossip over MPI (SPEC §3.1): a `Topology` on a `Communicator`.

`Gossip` builds an MPI distributed-graph communicator and this rank's row of the mixing matrix
``W``; `Gossip.exchange` moves bytes to and from the neighbours, `Gossip.mix` is one exact
gossip averaging step ``x_i ← Σ_j w_ij x_j``, and `Gossip.spectral_gap` is computed on one rank
and broadcast to the others. The graphs themselves live in `mpicomp.comm.graphs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..backend import is_device_array, to_host, to_like
from .graphs import Topology

if TYPE_CHECKING:
    from .communicator import Communicator


class Gossip:
    """A topology on a `Communicator`: neighbour exchange and exact gossip averaging.

    Collective: every rank of ``communicator`` constructs it with the same topology. The ranks
    first compare their topologies' sizes and digests (one small allgather), so a wrong size or a
    graph that differs between ranks is a ValueError on every rank rather than a hang; a
    disconnected graph is a ValueError too (SPEC §3.1).

    Parameters
    ----------
    communicator : mpicomp.comm.communicator.Communicator
        Its ``comm`` is the parent of the distributed-graph communicator (``reorder=False``, so
        node ``i`` is rank ``i``).
    topology : Topology
        A graph with ``topology.n == communicator.size``.
    weights : {"metropolis", "uniform"}
        Mixing weights (see `Topology.mixing_matrix`).

    Attributes
    ----------
    neighbors : list of int
        This rank's neighbours, sorted (in- and out-neighbours: the graph is undirected).
    mixing : str
        The name of the weights (``weights`` above).
    weights : dict
        This rank's row of ``W`` off the diagonal: neighbour → ``w_ij``.
    self_weight : float
        ``w_ii``.
    row : dict
        This rank's whole row of ``W``: ``weights`` and ``{rank: self_weight}``.
    graph_comm : mpi4py.MPI.Distgraphcomm
    """

    def __init__(self, communicator: Communicator, topology: Topology,
                 weights: str = "metropolis") -> None:
        size, rank = communicator.size, communicator.rank
        views = communicator.mpi_comm.allgather((topology.n, topology.digest()))
        if any(m != size for m, _ in views):
            bad = sorted({m for m, _ in views if m != size})
            raise ValueError(f"topology {topology.spec!r}: node count {', '.join(map(str, bad))} "
                             f"does not match the communicator's {size} ranks; build it with "
                             f"n={size}")
        differ = [r for r, (_, d) in enumerate(views) if d != views[0][1]]
        if differ:
            raise ValueError(f"topology {topology.spec!r} differs between ranks (ranks {differ} "
                             "have another graph than rank 0); build it the same way on every rank")
        comps = topology.components()
        if len(comps) > 1:
            raise ValueError(f"topology {topology.spec!r} is not connected (components of sizes "
                             f"{[len(c) for c in comps]}): gossip would never reach consensus")
        row = topology.weight_row(rank, weights)
        self.communicator = communicator
        self.topology = topology
        self.mixing = weights
        self.rank = rank
        self.neighbors = topology.neighbors(rank)
        self.row = dict(row)
        self.self_weight = row.pop(rank)
        self.weights = row
        self.graph_comm = communicator.mpi_comm.Create_dist_graph_adjacent(
            self.neighbors, self.neighbors, reorder=False)

    @property
    def degree(self) -> int:
        return len(self.neighbors)

    def exchange(self, buf: np.ndarray | None, flags: int = 0,
                 nbytes: int | None = None) -> dict[int, np.ndarray]:
        """Send ``buf`` (flat ``uint8``) to every neighbour (collective over all ranks).

        One small ``Allreduce`` agrees every rank's control bits (``flags``: `NON_FINITE` when
        this rank's vector has NaN/Inf, with ``buf`` None; a stop request) — and, when the
        sizes vary (``nbytes`` None), every rank's size — before one neighbour collective moves
        the bytes. NonFiniteInput is raised on every rank before anything moves.

        Returns
        -------
        dict
            Neighbour rank → the buffer it sent (counted under ``"neighbor_allgatherv"``; with no
            neighbours, i.e. one rank, nothing is sent and nothing counted).
        """
        if buf is not None and (buf.dtype != np.uint8 or buf.ndim != 1):
            raise TypeError(f"exchange takes a flat uint8 buffer, got {buf.dtype}{buf.shape}")
        c = self.communicator
        if nbytes is None:
            _, sizes = c.agree_flags(flags, nbytes=0 if buf is None else buf.size)
        else:
            c.agree_flags(flags)
            sizes = np.full(c.size, nbytes, dtype=np.int64)
        if not self.neighbors:
            return {}  # one rank (the graph is connected): nothing to exchange, nothing counted
        sources = self.graph_comm.Get_dist_neighbors()[0]
        return dict(zip(sources, c.neighbor_allgatherv(self.graph_comm, buf, sizes)))

    def mix(self, x: np.ndarray, flags: int = 0) -> np.ndarray:
        """One exact gossip step ``Σ_j w_ij x_j`` over this rank and its neighbours.

        ``x`` (NumPy or CuPy) has the same shape and dtype on every rank; its raw bytes are
        exchanged (`exchange`, with the control bits ``flags``). The sum runs in ascending node
        order with Python-float weights, in ``x``'s dtype, so it equals the serial
        ``sum(float(W[i, j]) * X[j] for j in sorted support)`` bit for bit.
        """
        if is_device_array(x):  # the model goes down and the neighbours' come up, explicitly
            host = np.ascontiguousarray(to_host(x))
            got = self.exchange(host.reshape(-1).view(np.uint8), flags, host.nbytes)
            terms = {j: to_like(b.view(host.dtype).reshape(host.shape), x)
                     for j, b in got.items()}
        else:
            x = np.ascontiguousarray(x)
            got = self.exchange(x.reshape(-1).view(np.uint8), flags, x.nbytes)
            terms = {j: b.view(x.dtype).reshape(x.shape) for j, b in got.items()}
        terms[self.rank] = x
        out = None
        for j in sorted(terms):
            t = self.row[j] * terms[j]
            out = t if out is None else out + t
        return out

    def spectral_gap(self, root: int = 0) -> float:
        """``δ_W`` of this graph and weights, computed on rank ``root`` only and broadcast.

        Collective (one ``bcast`` on the parent communicator, not counted as traffic): every rank
        gets the same float, and the other ranks spend no time on eigenvalues
        (`Topology.spectral_gap`: ARPACK on the sparse ``W`` above `DENSE_GAP_MAX_NODES`
        nodes). An error on ``root`` is a RuntimeError on every rank, not a hang.
        """
        comm = self.communicator.mpi_comm
        result = None
        if comm.rank == root:
            try:
                result = (self.topology.spectral_gap(weights=self.mixing), None)
            except Exception as exc:  # sent to every rank: nobody is left waiting in the bcast
                result = (None, f"{type(exc).__name__}: {exc}")
        gap, error = comm.bcast(result, root=root)
        if error is not None:
            raise RuntimeError(f"rank {root} could not compute the spectral gap of topology "
                               f"{self.topology.spec!r}: {error}")
        return gap

    def close(self) -> None:
        """Free the graph communicator (collective; safe to call twice)."""
        from mpi4py import MPI

        if self.graph_comm is not None and self.graph_comm != MPI.COMM_NULL:
            self.graph_comm.Free()
        self.graph_comm = None

    def __enter__(self) -> Gossip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
