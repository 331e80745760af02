"""Gossip over real MPI ranks: neighbour bytes, exact byte counters, averaging to the mean,
and size / graph mismatches that fail on every rank instead of hanging."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.comm.communicator import Communicator
from mpicomp.comm.gossip import Gossip
from mpicomp.comm.graphs import build, make_graph
from mpicomp.comm.netmodel import make_network_model

KINDS = ["ring", "torus", "hypercube", "complete", "star", "erdos_renyi:p=0.5,seed=3", "edges"]


def make_topology(kind, comm, shared_tmp, skip_unless):
    """The topology ``kind`` on ``comm.size`` nodes; skips (on every rank) where it cannot exist."""
    n = comm.size
    if kind == "hypercube":
        skip_unless(n & (n - 1) == 0, f"hypercube needs a power-of-two rank count, not {n}")
    if kind == "edges":  # a path 0 — 1 — … — n−1 written by rank 0, read by every rank
        path = shared_tmp / "path.txt"
        if comm.rank == 0:
            path.write_text("# path graph\n" + "".join(f"{i} {i + 1}\n" for i in range(n - 1)))
        comm.Barrier()
        return make_graph(f"edges:{path}", n)
    return make_graph(kind, n)


def payload(rank: int, round_: int = 0) -> np.ndarray:
    """Rank-specific bytes of rank-dependent length (rank 0 sends nothing in round 0)."""
    size = 7 * rank + 3 * round_
    return np.random.default_rng([rank, round_]).integers(0, 256, size, dtype=np.uint8)


def rank_vector(rank: int, size: int, d: int = 6) -> np.ndarray:
    seq = np.random.SeedSequence(31).spawn(size)[rank]
    return np.random.default_rng(seq).standard_normal(d) * (rank + 1)


# Each test makes all its collective calls first and asserts afterwards, so a failure on some
# ranks cannot leave the others waiting in the next collective.


@pytest.mark.mpi
@pytest.mark.parametrize("kind", KINDS)
def test_exchange_delivers_each_neighbours_bytes_and_counts_them(comm, kind, mpi_shared_tmp,
                                                                 mpi_skip_unless):
    topo = make_topology(kind, comm, mpi_shared_tmp, mpi_skip_unless)
    net = make_network_model("1gbe")
    communicator = Communicator(comm, network=net)
    with Gossip(communicator, topo) as gossip:
        dist_neighbors = gossip.graph_comm.Get_dist_neighbors()[:2]
        received = [gossip.exchange(payload(comm.rank, r)) for r in range(2)]
    s = communicator.stats.by_op["neighbor_allgatherv"]
    totals = comm.allreduce(np.array([s.bytes_sent, s.bytes_received]))

    nbrs = topo.neighbors(comm.rank)
    W = topo.mixing_matrix()
    assert gossip.neighbors == nbrs and dist_neighbors == (nbrs, nbrs)
    assert gossip.weights == {j: W[comm.rank, j] for j in nbrs}
    assert gossip.self_weight == W[comm.rank, comm.rank]
    for r, got in enumerate(received):
        assert sorted(got) == nbrs
        for j in nbrs:
            assert got[j].dtype == np.uint8 and np.array_equal(got[j], payload(j, r)), \
                f"round {r}: bytes from rank {j} differ"
    assert s.calls == (2 if nbrs else 0)  # one rank: no neighbours, no MPI call
    assert s.bytes_sent == sum(payload(comm.rank, r).size for r in range(2)) * len(nbrs)
    assert s.bytes_received == sum(payload(j, r).size for j in nbrs for r in range(2))
    model = sum(len(nbrs) * net.link(max([payload(comm.rank, r).size]
                                          + [payload(j, r).size for j in nbrs]))
                for r in range(2) if nbrs)
    assert s.model_seconds == pytest.approx(model, rel=1e-12)
    assert totals[0] == totals[1]  # summed over ranks, sent equals received
    assert gossip.graph_comm is None
    gossip.close()  # a second close is a no-op


@pytest.mark.mpi
@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("kind", KINDS)
def test_repeated_mix_converges_to_the_network_mean(comm, kind, weights, mpi_shared_tmp,
                                                    mpi_skip_unless):
    topo = make_topology(kind, comm, mpi_shared_tmp, mpi_skip_unless)
    n, rank = comm.size, comm.rank
    X0 = np.stack([rank_vector(r, n) for r in range(n)])  # serial reference: every rank's x0
    mean = X0.mean(axis=0)
    W = topo.mixing_matrix(weights)
    rate = 1 - topo.spectral_gap(W)
    steps = 1 if rate < 1e-12 else min(400, int(np.ceil(np.log(1e-10) / np.log(rate))))
    communicator = Communicator(comm)
    X_serial, x, worst = X0, X0[rank].copy(), 0.0
    with Gossip(communicator, topo, weights=weights) as gossip:
        for _ in range(steps):
            x = gossip.mix(x)
            X_serial = W @ X_serial
            worst = max(worst, np.abs(x - X_serial[rank]).max())
    X = np.stack(comm.allgather(x))

    scale = 1 + np.abs(X0).max()
    assert worst <= 1e-13 * scale  # every step equals the serial x ← Wx (up to summation order)
    # the network mean is preserved, and the disagreement shrank at least as fast as (1 − gap)^t
    assert np.abs(X.mean(axis=0) - mean).max() <= 1e-12 * scale
    err0 = np.linalg.norm(X0 - mean)
    assert np.linalg.norm(X - mean) <= max(rate**steps, 1e-10) * err0 * (1 + 1e-6) + 1e-12
    assert np.abs(X - mean).max() <= 1e-9 * scale  # stated tolerance: 1e-9 relative
    s = communicator.stats.by_op["neighbor_allgatherv"]
    deg = topo.degree(rank)
    assert s.calls == (steps if deg else 0) and s.bytes_sent == steps * X0[0].nbytes * deg


@pytest.mark.mpi
def test_mix_of_float32_matrices_matches_serial(comm):
    topo = build("ring", comm.size)
    W = topo.mixing_matrix()
    X0 = np.stack([rank_vector(r, comm.size, 12).reshape(3, 4).astype(np.float32)
                   for r in range(comm.size)])
    with Gossip(Communicator(comm), topo) as gossip:
        y = gossip.mix(X0[comm.rank].T)  # non-contiguous input
    # serial reference: ascending j, Python-float weights, float32 arithmetic
    ref = sum(float(W[comm.rank, j]) * X0[j].T for j in range(comm.size) if W[comm.rank, j])
    assert y.dtype == np.float32 and y.shape == (4, 3)
    assert np.array_equal(y, ref)


@pytest.mark.mpi
@pytest.mark.parametrize("kind", ["ring", "complete", "star"])
def test_wrong_size_raises_on_every_rank(comm, kind):
    communicator = Communicator(comm)
    for n in (comm.size + 1, 2 * comm.size + 3):
        with pytest.raises(ValueError,
                           match=f"does not match the communicator's {comm.size} ranks"):
            Gossip(communicator, build(kind, n))
    # nobody is left behind in a collective: a barrier-like allreduce completes on every rank
    assert comm.allreduce(1) == comm.size
    assert "neighbor_allgatherv" not in communicator.stats.by_op


@pytest.mark.mpi
def test_hypercube_at_a_non_power_of_two_size_raises_on_every_rank(comm):
    n = comm.size
    if n & (n - 1):
        with pytest.raises(ValueError, match=f"got n={n}; nearest"):
            make_graph("hypercube", n)
    with pytest.raises(ValueError, match="does not match"):
        Gossip(Communicator(comm), build("hypercube", 8 if n == 4 else 4))
    assert comm.allreduce(1) == n


@pytest.mark.mpi(min_size=3)
def test_graphs_that_differ_between_ranks_raise_on_every_rank(comm):
    topo = build("ring" if comm.rank == 0 else "star", comm.size)  # triangle vs path at 3 ranks
    with pytest.raises(ValueError, match=r"differs between ranks \(ranks \[1"):
        Gossip(Communicator(comm), topo)
    seeded = build("erdos_renyi", comm.size, p=0.5, seed=comm.rank)  # per-rank seeds: a bug
    same = len(set(comm.allgather(seeded.edges))) == 1
    if same:
        Gossip(Communicator(comm), seeded).close()
    else:
        with pytest.raises(ValueError, match="differs between ranks"):
            Gossip(Communicator(comm), seeded)
    assert comm.allreduce(1) == comm.size


@pytest.mark.mpi(min_size=2)
def test_disconnected_graph_raises_on_every_rank(comm):
    from mpicomp.comm.graphs import Topology

    topo = Topology("edges", comm.size, [(0, 1)])  # nodes 2… isolated (at 2 ranks: connected)
    if comm.size == 2:
        Gossip(Communicator(comm), topo).close()
    else:
        with pytest.raises(ValueError, match=r"not connected \(components of sizes \[2, 1"):
            Gossip(Communicator(comm), topo)
    assert comm.allreduce(1) == comm.size


def counting_spectral_gap(monkeypatch):
    """Patch `Topology.spectral_gap` on this rank to count its calls; returns the call list."""
    from mpicomp.comm.graphs import Topology

    calls, original = [], Topology.spectral_gap

    def counted(self, *args, **kwargs):
        calls.append(self.spec)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Topology, "spectral_gap", counted)
    return calls


@pytest.mark.mpi
@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("kind", ["ring", "star", "erdos_renyi:p=0.5,seed=3"])
def test_spectral_gap_is_computed_on_one_rank_and_broadcast(comm, kind, weights, monkeypatch):
    from mpicomp.comm.graphs import spectral_gap

    topo = make_graph(kind, comm.size)
    roots = sorted({0, comm.size - 1})
    calls = counting_spectral_gap(monkeypatch)
    gaps, calls_per_rank = {}, {}
    with Gossip(Communicator(comm), topo, weights=weights) as gossip:
        for root in roots:
            before = len(calls)
            gaps[root] = comm.allgather(gossip.spectral_gap(root=root))
            calls_per_rank[root] = comm.allgather(len(calls) - before)

    want = spectral_gap(topo.mixing_matrix(weights))  # the dense gap, serially on every rank
    for root in roots:
        assert calls_per_rank[root] == [int(r == root) for r in range(comm.size)]
        assert gaps[root] == [want] * comm.size  # n ≤ 64: exactly the dense value, on every rank


@pytest.mark.mpi
def test_spectral_gap_failure_on_the_root_raises_on_every_rank(comm, monkeypatch):
    from mpicomp.comm.graphs import Topology

    def broken(self, *args, **kwargs):
        raise ValueError("no eigenvalues today")

    monkeypatch.setattr(Topology, "spectral_gap", broken)
    with Gossip(Communicator(comm), build("ring", comm.size)) as gossip:
        with pytest.raises(RuntimeError, match="rank 0 could not compute the spectral gap of "
                                               "topology 'ring': ValueError: no eigenvalues today"):
            gossip.spectral_gap()
        assert comm.allreduce(1) == comm.size  # nobody is left waiting in the broadcast
