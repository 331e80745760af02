"""The pipelined two-phase aggregator (point-to-point rounds, `Communicator.exchange`) against
its two blocking collectives and a serial replay, bit for bit, and its failure paths: a failure
on one rank mid-pipeline ends every rank with the error, leaving nothing behind for the next
reduce. Run under MPI (``mpiexec -n N python -m pytest --with-mpi``), at any N."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.comm.aggregate import AggregationError, NonFiniteInput, TwoPhaseAggregator, mean_of
from mpicomp.comm.communicator import Communicator, PayloadSizeError

pytestmark = pytest.mark.mpi
OPS = ["natural", "qsgd:s=4", "sign", "terngrad", "topk:k=0.1", "identity"]
SIZES = [1, 3, 7, 1037, 4099]  # odd, and below the rank count (chunks of 0 or 1 coordinates)


@pytest.fixture
def world(comm):
    return Communicator(comm, network="10gbe")


def vector(rank, d, dtype, step=0):
    seq = np.random.SeedSequence([11, rank, step])
    return (np.random.default_rng(seq).standard_normal(d) * (1 + rank)).astype(dtype)


def generator(rank, size):
    return np.random.default_rng(np.random.SeedSequence(5).spawn(size)[rank])


def recorded(agg):
    """``agg`` with every payload it encodes kept in ``agg.sent`` (bytes, bits)."""
    agg.sent = []
    real = agg.compressor.encode

    def encode(x, rng=None):
        p = real(x, rng)
        agg.sent.append((p.buffer.tobytes(), p.nbits))
        return p

    agg.compressor.encode = encode
    return agg


def serial_two_phase(op, n, d, dtype, steps):
    """Every step's two-phase mean and every rank's decoded messages, replayed on one rank."""
    rngs = [generator(q, n) for q in range(n)]
    b = np.concatenate([[0], np.cumsum([len(c) for c in np.array_split(np.empty(d), n)])])
    out = []
    for step in range(steps):
        chunks = [[op.encode(vector(q, d, dtype, step)[b[c] : b[c + 1]], rngs[q])
                   for c in range(n)] for q in range(n)]
        mean = np.empty(d, dtype)
        for c in range(n):  # owner c: the rank-order mean of chunk c, re-encoded
            m = int(b[c + 1] - b[c])
            avg, _ = mean_of(op, [chunks[q][c].buffer for q in range(n)], m, dtype)
            mean[b[c] : b[c + 1]] = op.decode(op.encode(avg, rngs[c]).buffer, m, dtype)
        own = [np.concatenate([op.decode(p.buffer, int(b[c + 1] - b[c]), dtype)
                               for c, p in enumerate(chunks[q])]) for q in range(n)]
        out.append((mean, own))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", OPS)
def test_pipeline_equals_collectives_and_serial_replay(world, spec, dtype):
    n, r = world.size, world.rank
    for d in SIZES:
        results, sent, stats = {}, {}, {}
        for pipeline in (True, False):
            agg = recorded(TwoPhaseAggregator(world, spec, pipeline=pipeline))
            rng, out = generator(r, n), np.empty(d, dtype)
            world.stats.reset()
            results[pipeline] = []
            for step in range(3):  # a new result array, then one reused (out=)
                a = agg.reduce(vector(r, d, dtype, step), rng, own=True, out=out if step else None)
                results[pipeline].append((a.mean.copy(), a.own, a.bits_up, a.bits_down))
            sent[pipeline] = agg.sent
            stats[pipeline] = {op: (s.calls, s.bytes_sent, s.bytes_received, s.model_seconds)
                               for op, s in world.stats.by_op.items()}
        assert sent[True] == sent[False], d  # the same payloads, in the same order
        assert stats[True] == stats[False], d  # counted as the same collectives
        replay = serial_two_phase(agg.compressor, n, d, np.dtype(dtype), 3)
        for (mean, own, up, down), (old_mean, old_own, old_up, old_down), (want, owns) in zip(
                results[True], results[False], replay):
            assert mean.dtype == dtype and mean.tobytes() == want.tobytes(), d
            assert old_mean.tobytes() == want.tobytes(), d
            assert own.tobytes() == owns[r].tobytes() == old_own.tobytes(), d
            assert (up, down) == (old_up, old_down)


def failing_on(agg, rank, call, change):
    """``agg`` whose ``call``-th encode on ``rank`` returns ``change(payload)`` (calls 0 … n−1
    are the chunks in order, call n the owner's re-encoded mean)."""
    if agg.comm.rank != rank:
        return agg
    real, calls = agg.compressor.encode, iter(range(1 << 30))

    def encode(x, rng=None):
        p = real(x, rng)
        return change(p) if next(calls) == call else p

    agg.compressor.encode = encode
    return agg


def corrupt(p):
    p.buffer[8:] = 0xFF  # a well-sized body that cannot decode: qsgd level 15 with s = 2
    return p


def one_byte_more(p):
    return type(p)(np.append(p.buffer, np.uint8(0)), p.nbits)


def reduce_then_check_next(world, agg, x, error, match):
    """``agg.reduce(x)`` raises ``error`` on every rank (returned); the next reduce is still
    right."""
    with pytest.raises(error, match=match) as caught:
        agg.reduce(x, generator(world.rank, world.size))
    again = TwoPhaseAggregator(world, "qsgd:s=2")
    res = again.reduce(vector(world.rank, x.size, x.dtype), generator(world.rank, world.size))
    ref = TwoPhaseAggregator(world, "qsgd:s=2", pipeline=False)
    want = ref.reduce(vector(world.rank, x.size, x.dtype), generator(world.rank, world.size))
    assert res.mean.tobytes() == want.mean.tobytes()
    return caught.value


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("chunk", ["first", "last"])
def test_corrupt_chunk_from_one_rank_fails_everywhere(world, chunk):
    n = world.size
    owner = 0 if chunk == "first" else n - 1
    agg = failing_on(TwoPhaseAggregator(world, "qsgd:s=2"), 1, owner, corrupt)
    x = vector(world.rank, 4099, np.float32)
    reduce_then_check_next(world, agg, x, AggregationError, f"rank {owner}: DecodeError")


@pytest.mark.mpi(min_size=2)
def test_wrong_size_chunk_from_one_rank_fails_everywhere(world):
    agg = failing_on(TwoPhaseAggregator(world, "qsgd:s=2"), 1, 0, one_byte_more)
    x = vector(world.rank, 4099, np.float32)
    reduce_then_check_next(world, agg, x, AggregationError,
                           "rank 0: ValueError: chunk payload of .* bytes from rank 1")


@pytest.mark.mpi(min_size=2)
def test_wrong_size_mean_from_one_owner_fails_everywhere(world):
    agg = failing_on(TwoPhaseAggregator(world, "qsgd:s=2"), 1, world.size, one_byte_more)
    x = vector(world.rank, 4099, np.float32)
    reduce_then_check_next(world, agg, x, PayloadSizeError, "rank 1: .* bytes, expected")


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_non_finite_chunk_on_one_rank_fails_everywhere(world, where):
    n = world.size
    x = vector(world.rank, 4099, np.float64)
    agg = TwoPhaseAggregator(world, "natural")
    b = agg.bounds(x.size)
    chunk = {"first": 0, "middle": n // 2, "last": n - 1}[where]
    if world.rank == n - 1:
        x[b[chunk]] = np.nan
    reduce_then_check_next(world, agg, x, NonFiniteInput, "NaN or Inf")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("call", ["first chunk", "last chunk", "mean"])
def test_an_exception_on_one_rank_mid_pipeline_fails_everywhere(world, call):
    """Any exception while a rank encodes (here on the last rank) travels as a failure: every
    rank raises it, the failing one chained to its own exception, and no message is left."""
    n, r = world.size, world.rank
    index = {"first chunk": 0, "last chunk": n - 1, "mean": n}[call]
    for d in (4099, 2**16 + 1):  # eager messages, and messages MPI moves by rendezvous
        agg = failing_on(TwoPhaseAggregator(world, "natural"), n - 1, index, raising)
        exc = reduce_then_check_next(world, agg, vector(r, d, np.float32), AggregationError,
                                     f"rank {n - 1}: RuntimeError: injected")
        assert isinstance(exc.__cause__, RuntimeError) == (r == n - 1)


def raising(p):
    raise RuntimeError("injected")
