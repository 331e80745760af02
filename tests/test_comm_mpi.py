"""Byte collectives, counters, the network model, aggregators and majority votes on real MPI
ranks, each checked against a serial replay of the same per-rank seeds."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.comm.aggregate import (
    AggregationError,
    AllgatherAggregator,
    MajorityVote,
    ServerAggregator,
    TwoPhaseAggregator,
    mean_of,
)
from mpicomp.comm.communicator import Communicator, PayloadSizeError
from mpicomp.comm.netmodel import make_network_model

pytestmark = pytest.mark.mpi
D = 1037
SEED = 77


def seeds(rank, size):
    seq = np.random.SeedSequence(SEED).spawn(size)[rank]
    data, enc = seq.spawn(2)
    return np.random.default_rng(data), np.random.default_rng(enc)


def vector(rank, size, dtype=np.float32):
    return (seeds(rank, size)[0].standard_normal(D) + 0.3 * rank).astype(dtype)


def payload_of(rank, n):
    return np.full(3 + 5 * rank, rank, dtype=np.uint8)


@pytest.fixture
def world(comm):
    return Communicator(comm, network="10gbe")


def test_allgatherv_and_counters(world):
    n, r = world.size, world.rank
    got = world.allgatherv(payload_of(r, n))
    assert [list(b) for b in got] == [list(payload_of(q, n)) for q in range(n)]
    s = world.stats.by_op["allgatherv"]
    sizes = [payload_of(q, n).size for q in range(n)]
    assert ((s.calls, s.bytes_sent, s.bytes_received)
            == (1, sizes[r] * (n - 1), sum(sizes) - sizes[r]))
    net = make_network_model("10gbe")
    assert s.model_seconds == pytest.approx((n - 1) * (net.alpha + max(sizes) / net.beta))


def test_gatherv_bcast_alltoallv_counters_balance(world):
    n, r = world.size, world.rank
    root = n - 1
    got = world.gatherv(payload_of(r, n), root=root)
    if r == root:
        assert [list(b) for b in got] == [list(payload_of(q, n)) for q in range(n)]
    else:
        assert got is None
    msg = np.arange(100, dtype=np.uint8) if r == 0 else None
    assert list(world.bcast(msg, root=0)) == list(range(100))
    sends = [np.full(q + r + 1, 10 * r + q, np.uint8) for q in range(n)]
    recv = world.alltoallv(sends)
    assert [list(b) for b in recv] == [[10 * q + r] * (r + q + 1) for q in range(n)]
    for op in ("gatherv", "bcast", "alltoallv"):
        s = world.stats.by_op[op]
        assert world.mpi_comm.allreduce(s.bytes_sent) == world.mpi_comm.allreduce(s.bytes_received)
    assert world.stats.by_op["bcast"].bytes_sent == (100 * (n - 1) if r == 0 else 0)
    assert world.stats.by_op["alltoallv"].bytes_sent == sum(q + r + 1 for q in range(n) if q != r)


def test_wrong_payload_size_fails_on_every_rank(world):
    buf = np.zeros(10 if world.rank != world.size - 1 else 11, np.uint8)
    if world.size == 1:
        buf = np.zeros(11, np.uint8)
    with pytest.raises(PayloadSizeError, match=f"rank {world.size - 1}: 11 bytes, expected 10"):
        world.allgatherv(buf, expected=10)


OPS = ["identity", "natural", "qsgd:s=4,block=64", "qsgd:s=3,coder=elias", "sign", "topk:k=0.1",
       "randk:k=0.2"]


def serial_encodes(op, n):
    """Every rank's payload and its generator afterwards, replayed serially."""
    out = []
    for q in range(n):
        rng = seeds(q, n)[1]
        out.append((op.encode(vector(q, n), rng), rng))
    return out


@pytest.mark.parametrize("spec", OPS)
def test_allgather_aggregator_equals_serial_mean(world, spec):
    agg = AllgatherAggregator(world, spec)
    res = agg.reduce(vector(world.rank, world.size), seeds(world.rank, world.size)[1], own=True)
    replay = serial_encodes(agg.compressor, world.size)
    want, _ = mean_of(agg.compressor, [p.buffer for p, _ in replay], D, np.float32)
    assert np.array_equal(res.mean, want)
    assert np.array_equal(res.own, agg.compressor.decode(replay[world.rank][0].buffer, D))
    assert res.bits_up == replay[world.rank][0].nbits


@pytest.mark.parametrize("dedicated", [False, True])
@pytest.mark.parametrize("downlink", [None, "natural", "qsgd:s=2,coder=elias"])
@pytest.mark.parametrize("spec", OPS)
def test_server_aggregator_equals_serial_mean(world, spec, downlink, dedicated, mpi_skip_unless):
    mpi_skip_unless(world.size >= 2 or not dedicated, "a dedicated server needs 2 ranks")
    root = world.size - 1
    agg = ServerAggregator(world, spec, root=root, downlink=downlink, dedicated=dedicated)
    res = agg.reduce(vector(world.rank, world.size), seeds(world.rank, world.size)[1], own=True)
    replay = serial_encodes(agg.compressor, world.size)
    senders = [q for q in range(world.size) if not (dedicated and q == root)]
    mean, _ = mean_of(agg.compressor, [replay[q][0].buffer for q in senders], D, np.float32)
    root_rng = replay[root][1] if not dedicated else seeds(root, world.size)[1]
    down = agg.down.encode(mean, root_rng)  # the root re-compresses with its generator
    assert np.array_equal(res.mean, agg.down.decode(down.buffer, D))
    if downlink is None:
        assert np.array_equal(res.mean, mean)
    assert (res.own is None if (dedicated and world.rank == root)
            else np.array_equal(res.own,
                                agg.compressor.decode(replay[world.rank][0].buffer, D)))
    assert res.bits_down == (down.nbits if agg.down.fixed_size or world.rank == root
                             else 8 * -(-down.nbits // 8))


@pytest.mark.parametrize("spec", OPS)
def test_two_phase_aggregator_equals_serial_replay(world, spec):
    n = world.size
    agg = TwoPhaseAggregator(world, spec)
    res = agg.reduce(vector(world.rank, n), seeds(world.rank, n)[1])
    b = agg.bounds(D)
    rngs = [seeds(q, n)[1] for q in range(n)]
    chunks = [[agg.compressor.encode(vector(q, n)[b[c] : b[c + 1]], rngs[q]) for c in range(n)]
              for q in range(n)]
    want = np.empty(D, np.float32)
    for c in range(n):  # owner c averages chunk c, re-compresses it with its generator
        size = int(b[c + 1] - b[c])
        m, _ = mean_of(agg.compressor, [chunks[q][c].buffer for q in range(n)], size, np.float32)
        again = agg.compressor.encode(m, rngs[c])
        want[b[c] : b[c + 1]] = agg.compressor.decode(again.buffer, size)
    assert np.array_equal(res.mean, want)


def test_identity_aggregators_give_the_exact_mean(world):
    x = vector(world.rank, world.size, np.float64)
    want = sum(vector(q, world.size, np.float64) for q in range(world.size)) / world.size
    rng = np.random.default_rng(0)
    for agg in (AllgatherAggregator(world, "identity"), ServerAggregator(world, "identity"),
                TwoPhaseAggregator(world, "identity")):
        np.testing.assert_allclose(agg.reduce(x, rng).mean, want, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_majority_vote_modes_agree_with_sign_of_summed_signs_and_tie_rule(world, dtype):
    n, r = world.size, world.rank
    x = vector(r, n, dtype)
    x[:4] = -1.0 if r < (n + 1) // 2 else 1.0  # majority negative (a tie when n is even → +1)
    x[4] = 0.0  # sign(0) = +1 on every rank
    signs = sum(np.where(vector(q, n) < 0, -1, 1) for q in range(n))
    signs[:4] = sum(-1 if q < (n + 1) // 2 else 1 for q in range(n))
    signs[4] = n
    want = np.where(signs < 0, -1.0, 1.0)
    assert (want[:4] == (1.0 if n % 2 == 0 else -1.0)).all()
    results = {}
    for mode in ("server", "allgather", "bitsliced"):
        vote = MajorityVote(world, mode)
        results[mode] = vote.vote(x).mean
        vote.close()
        assert results[mode].dtype == dtype and np.array_equal(results[mode], want), mode
    assert (world.stats.by_op["allreduce"].bytes_sent
            == 2 * (n - 1) * (-(-D // 64) * 8 * max(1, n.bit_length())) // n)


def test_bit_sliced_vote_uses_log_n_bit_planes(world):
    vote = MajorityVote(world, "bitsliced")
    res = vote.vote(vector(world.rank, world.size))
    vote.close()
    assert res.bits_up == int(world.size).bit_length() * D


@pytest.mark.mpi(min_size=2)
def test_corrupt_payload_on_one_rank_fails_everywhere(world):
    agg = ServerAggregator(world, "qsgd:s=2", root=0)
    if world.rank == 1:  # a well-sized but impossible message: level 3 with s = 2
        real = agg.compressor.encode

        def corrupt(x, rng):
            p = real(x, rng)
            p.buffer[12:] = 0xFF
            return p

        agg.compressor.encode = corrupt
    with pytest.raises(AggregationError, match="rank 0: DecodeError"):
        agg.reduce(vector(world.rank, world.size), np.random.default_rng(0))


@pytest.mark.mpi(min_size=2)
def test_wrong_size_payload_from_one_rank_fails_everywhere(world):
    def oversized(agg):
        if world.rank == 1:  # one extra byte from rank 1 only
            real = agg.compressor.encode
            agg.compressor.encode = lambda x, rng: type(p := real(x, rng))(
                np.append(p.buffer, np.uint8(0)), p.nbits)
        return agg

    for agg in (ServerAggregator(world, "qsgd:s=4"), AllgatherAggregator(world, "qsgd:s=4")):
        with pytest.raises(PayloadSizeError, match="rank 1: .* bytes, expected"):
            oversized(agg).reduce(vector(world.rank, world.size), np.random.default_rng(0))
    with pytest.raises(AggregationError, match="from rank 1"):
        oversized(TwoPhaseAggregator(world, "qsgd:s=4")).reduce(vector(world.rank, world.size),
                                                                np.random.default_rng(0))
