"""Compressed payloads travel between real MPI ranks as raw bytes and decode to what a serial
run with the same per-rank seeds computes."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.compress import make_compressor

SPECS = [
    "sign", "scaled_sign:block=64", "qsgd:s=4,block=128", "qsgd:s=4,coder=elias",
    "qsgd:s=3,coder=golomb", "terngrad", "terngrad:pack=trits", "natural", "natural_dither:s=4",
    "topk:k=0.05", "randk:k=0.1",
    "topk:k=0.1+natural", "randk:k=0.2+qsgd:s=2,coder=elias",
]
D = 3001
SEED = 2024


def rank_inputs(rank, size, dtype=np.float32):
    """Rank r's vector and generator: np.random.SeedSequence(seed).spawn(size)[r]."""
    seq = np.random.SeedSequence(SEED).spawn(size)[rank]
    data_rng, enc_rng = (np.random.default_rng(s) for s in seq.spawn(2))
    return data_rng.standard_normal(D).astype(dtype) * (rank + 1), enc_rng


def allgather_bytes(comm, buf):
    """Variable-size byte buffers from every rank, with a size exchange first."""
    from mpi4py import MPI

    counts = np.empty(comm.size, dtype=np.int64)
    comm.Allgather([np.array([buf.size], np.int64), MPI.INT64_T], [counts, MPI.INT64_T])
    displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
    recv = np.empty(int(counts.sum()), dtype=np.uint8)
    comm.Allgatherv([buf, MPI.BYTE], [recv, counts, displs, MPI.BYTE])
    return [recv[o : o + c] for o, c in zip(displs, counts)]


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("spec", SPECS)
def test_payloads_cross_ranks_and_match_serial_reference(comm, spec, dtype):
    op = make_compressor(spec)
    x, rng = rank_inputs(comm.rank, comm.size, dtype)
    mine = op.encode(x, rng)
    received = allgather_bytes(comm, mine.buffer)
    assert len(received) == comm.size
    mean = np.zeros(D)
    for r, buf in enumerate(received):
        # serial reference: recompute rank r's payload from its seeds on this rank
        xr, rng_r = rank_inputs(r, comm.size, dtype)
        ref = op.encode(xr, rng_r)
        assert np.array_equal(buf, ref.buffer), f"payload of rank {r} differs from the serial one"
        mean += op.decode(buf, D, dtype)
    mean /= comm.size
    # every rank holds the very same mean, bit for bit
    means = comm.allgather(mean.tobytes())
    assert all(m == means[0] for m in means)
    total = comm.allreduce(mine.nbytes)
    assert total == sum(b.size for b in received)


@pytest.mark.mpi(min_size=2)
def test_shared_seed_randk_keeps_the_same_coordinates_on_every_rank(comm):
    op = make_compressor("randk:k=50,shared=1")
    x, _ = rank_inputs(comm.rank, comm.size)
    shared = np.random.default_rng(99)  # same state on every rank
    payload = op.encode(x, shared)
    support = np.flatnonzero(op.decode(payload.buffer, D))
    supports = comm.allgather(support)
    assert all(np.array_equal(s, supports[0]) for s in supports)
    assert payload.nbits == 50 * 32  # values only: the indices follow from the shared key


@pytest.mark.mpi
def test_sign_payload_is_one_bit_per_coordinate_on_the_wire(comm):
    x, _ = rank_inputs(comm.rank, comm.size)
    received = allgather_bytes(comm, make_compressor("sign").encode(x).buffer)
    assert [b.size for b in received] == [8 + -(-D // 8)] * comm.size
    votes = sum(make_compressor("sign").decode(b, D) for b in received)
    # majority of the signs equals the sign of the summed signs, computed serially
    want = sum(np.where(rank_inputs(r, comm.size)[0] < 0, -1.0, 1.0) for r in range(comm.size))
    assert np.array_equal(votes, want)
