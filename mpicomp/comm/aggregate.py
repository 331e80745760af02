"""Compressed means and majority votes over a `Communicator`.

Every aggregator turns each rank's vector into a compressed message, moves the bytes, and
returns the same result on every rank, equal to a serial computation from the same payloads:
decoded messages are summed in rank order in float64 and divided by the number of senders.

- `ServerAggregator`: gather to a root, average, broadcast (raw, or re-compressed with a
  downlink compressor); the root is a worker too, or a dedicated server that sends nothing.
- `AllgatherAggregator`: every rank receives and decodes every message.
- `TwoPhaseAggregator`: scatter-reduce then allgather, as compressed allreduces are built
  (each rank owns one chunk: it averages the n compressed copies of that chunk, re-compresses
  the average, and the re-compressed chunks are allgathered).
- `MajorityVote`: sign(Σ_i sign(x_i)) with 1 bit a coordinate each way, through a server, by
  allgather, or as a bit-sliced counter ``Allreduce`` with a user-defined MPI op.

A failure on one rank (a payload of the wrong size, a corrupted buffer) is raised on every rank
before anyone enters the next collective, so no rank hangs: sizes are exchanged before the data
(`Communicator` checks them everywhere), buffers that every rank holds fail identically, and
where one rank alone decodes (the server, a chunk owner) `collectively` shares its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..compress import Compressor, get
from ..compress.base import check_dtype
from ..compress.registry import check_lengths
from .communicator import Communicator

VOTE_MODES = ("server", "allgather", "bitsliced")


class AggregationError(RuntimeError):
    """A rank failed inside an aggregation; raised identically on every rank."""


@dataclass
class Aggregate:
    """Result of one aggregation on this rank.

    Attributes
    ----------
    mean : numpy.ndarray
        The aggregated vector, identical on every rank.
    own : numpy.ndarray or None
        This rank's own decoded message (what error feedback and DIANA's shifts need), when
        asked for with ``own=True``; None on a dedicated server.
    bits_up, bits_down : int
        Information bits this rank sent towards the aggregate, and received back from it.
    """

    mean: np.ndarray
    own: Optional[np.ndarray]
    bits_up: int
    bits_down: int


def collectively(comm, fn, *args, catch=(ValueError, TypeError), error=AggregationError):
    """Run ``fn(*args)``; if it raises one of ``catch`` on any rank, raise ``error`` on every rank.

    ``comm`` is a `Communicator` or an mpi4py communicator. The message lists each failing
    rank's exception; ``error.causes`` holds them as ``(rank, exception text)``. DecodeError and
    PayloadSizeError are ValueErrors, so the default catches what aggregation can raise.
    """
    raw = getattr(comm, "comm", comm)
    try:
        result, failure = fn(*args), None
    except catch as exc:
        result, failure = None, f"{type(exc).__name__}: {exc}"
    failures = [(r, f) for r, f in enumerate(raw.allgather(failure)) if f]
    if failures:
        exc = error("; ".join(f"rank {r}: {f}" for r, f in failures))
        exc.causes = failures
        raise exc
    return result


def payload_bits(op: Compressor, buf: np.ndarray, d: int, dtype) -> int:
    """Information bits of a received buffer: exact for fixed-size operators, whole bytes of
    the body otherwise."""
    if op.fixed_size:
        return op.body_bits(d, dtype)
    return 8 * (buf.size - op.nbytes_max(0, dtype))


def mean_of(op: Compressor, payloads, d: int, dtype, keep: Optional[int] = None, work=None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Rank-order float64 mean of decoded payloads, and the decoded payload number ``keep``.

    ``work`` (a `Workspace`) supplies reused float64 accumulator, decode and result buffers;
    the returned mean then lives in the workspace until the next call.
    """
    work = work or Workspace()
    acc = work.get("acc", d, np.float64)
    acc.fill(0.0)
    scratch = work.get("scratch", d, dtype)
    kept = None
    for i, buf in enumerate(payloads):
        if i == keep:
            kept = op.decode(buf, d, dtype)
            acc += kept
        else:
            op.decode_add(buf, d, dtype, acc, scratch)  # fused where the operator's kernel allows
    mean = work.get("mean", d, dtype)
    np.divide(acc, max(len(payloads), 1), out=mean, casting="unsafe")
    return mean, kept


class Workspace:
    """Named scratch arrays reused across calls (avoids page-faulting fresh memory each step)."""

    def __init__(self):
        self._arrays = {}

    def get(self, name: str, d: int, dtype) -> np.ndarray:
        arr = self._arrays.get(name)
        if arr is None or arr.size != d or arr.dtype != dtype:
            arr = self._arrays[name] = np.empty(d, dtype=dtype)
        return arr


def result_array(out: Optional[np.ndarray], d: int, dtype) -> np.ndarray:
    """``out`` (checked) or a new array for an aggregation's result."""
    if out is None:
        return np.empty(d, dtype=dtype)
    if out.shape != (d,) or out.dtype != dtype:
        raise ValueError(f"out must be a {np.dtype(dtype)} vector of length {d}, got {out.dtype}{out.shape}")
    return out


class Aggregator:
    """Base: ``reduce(x, rng) -> Aggregate`` is collective (every rank calls it in lockstep)."""

    def __init__(self, comm: Communicator, compressor):
        self.comm = comm
        self.op = get(compressor)
        self.work = Workspace()

    def lengths(self, d: int) -> list[int]:
        """The lengths of the vectors its operators compress when it reduces ``d``-vectors."""
        return [d]

    def describe_shortest(self, d: int) -> str:
        """What the shortest of `lengths` is, for `check_dimension`'s message."""
        return "the model"

    def check_dimension(self, d: int) -> None:
        """Raise a ValueError unless the uplink operator (and the downlink, if any) fits every
        vector this aggregator will hand it for ``d``-vectors (`registry.check_lengths`).
        No communication: every rank reaches the same verdict."""
        lengths, where = self.lengths(d), self.describe_shortest(d)
        check_lengths(self.op, lengths, where)
        down = getattr(self, "down", self.op)
        if down is not self.op:
            check_lengths(down, lengths, where, setting="downlink")

    def expected_nbytes(self, d: int, dtype) -> Optional[int]:
        """The size every message must have (fixed-size operators), else None."""
        return self.op.nbytes_max(d, dtype) if self.op.fixed_size else None

    def reduce(self, x: np.ndarray, rng: np.random.Generator, own: bool = False, out=None) -> Aggregate:  # pragma: no cover
        """Aggregate this rank's ``x`` (collective); ``own=True`` also decodes this rank's
        message; ``out`` receives the mean (a reused array saves page faults)."""
        raise NotImplementedError


class ServerAggregator(Aggregator):
    """Gather compressed vectors on ``root``, average, broadcast.

    Parameters
    ----------
    downlink : str or Compressor, optional
        Re-compress the mean before the broadcast (bidirectional compression); default: send the
        mean as it is (``identity``).
    dedicated : bool
        The root is a server only: it sends no vector and the mean is over the other ranks.
    """

    def __init__(self, comm, compressor, root: int = 0, downlink=None, dedicated: bool = False):
        super().__init__(comm, compressor)
        if not 0 <= root < comm.size:
            raise ValueError(f"root={root} is not a rank of a communicator of size {comm.size}")
        if dedicated and comm.size < 2:
            raise ValueError("a dedicated server needs at least 2 ranks (1 server + workers)")
        self.root = root
        self.down = get(downlink or "identity")
        self.dedicated = dedicated

    @property
    def is_root(self) -> bool:
        return self.comm.rank == self.root

    def gather(self, x, rng, own: bool = False) -> Aggregate:
        """The uplink half (collective): every sender's compressed ``x`` is averaged on the root.

        Returns an `Aggregate` whose ``mean`` is the average on the root and None elsewhere,
        ``own`` this rank's decoded message (when asked), ``bits_down`` 0.
        """
        c = self.comm
        dtype = check_dtype(x.dtype)
        d = x.size
        sends = not (self.dedicated and self.is_root)
        payload = self.op.encode(x, rng) if sends else None
        want = self.expected_nbytes(d, dtype)
        if want is not None:  # every rank checks every size before the data moves
            want = [0 if (self.dedicated and r == self.root) else want for r in range(c.size)]
        gathered = c.gatherv(payload.buffer if sends else np.empty(0, np.uint8), root=self.root, expected=want)

        def average():
            senders = [r for r in range(c.size) if not (self.dedicated and r == self.root)]
            return mean_of(self.op, [gathered[r] for r in senders], d, dtype, work=self.work)[0] if self.is_root else None

        mean = collectively(c, average)
        mine = self.op.decode(payload.buffer, d, dtype) if (own and sends) else None
        return Aggregate(mean, mine, payload.nbits if sends else 0, 0)

    def broadcast(self, vector: Optional[np.ndarray], rng, d: int, dtype, op=None, out=None) -> tuple[np.ndarray, int]:
        """The downlink half (collective): the root's ``vector`` compressed with ``op`` (default
        the downlink operator), decoded on every rank. Returns ``(values, bits received)``."""
        op = self.down if op is None else get(op)
        dtype = check_dtype(dtype)
        down = op.encode(vector, rng) if self.is_root else None
        received = self.comm.bcast(down.buffer if self.is_root else None, root=self.root)
        result = op.decode(received, d, dtype, out=result_array(out, d, dtype))
        return result, (down.nbits if self.is_root else payload_bits(op, received, d, dtype))

    def reduce(self, x, rng, own=False, out=None):
        up = self.gather(x, rng, own)
        result, bits_down = self.broadcast(up.mean, rng, x.size, x.dtype, out=out)
        return Aggregate(result, up.own, up.bits_up, bits_down)


class AllgatherAggregator(Aggregator):
    """Every rank receives every compressed vector and averages them itself."""

    def reduce(self, x, rng, own=False, out=None):
        dtype = check_dtype(x.dtype)
        payload = self.op.encode(x, rng)
        bufs = self.comm.allgatherv(payload.buffer, self.expected_nbytes(x.size, dtype))
        # same buffers on every rank, so the same outcome (and the same error, if any) everywhere
        mean, mine = mean_of(self.op, bufs, x.size, dtype, keep=self.comm.rank if own else None, work=self.work)
        result = result_array(out, x.size, dtype)
        result[...] = mean
        return Aggregate(result, mine, payload.nbits, 0)


class TwoPhaseAggregator(Aggregator):
    """Scatter-reduce of compressed chunks, re-compression, allgather.

    Rank q owns coordinates ``bounds[q]:bounds[q+1]`` (``numpy.array_split`` sizes). Each rank
    encodes its n chunks (in chunk order, from its generator) and sends chunk q to rank q;
    rank q averages the n decoded copies in rank order, encodes the average with ``downlink``
    (default: the same operator) and the encoded averages are allgathered.
    """

    def __init__(self, comm, compressor, downlink=None):
        super().__init__(comm, compressor)
        self.down = get(downlink) if downlink is not None else self.op

    def bounds(self, d: int) -> np.ndarray:
        sizes = [len(c) for c in np.array_split(np.empty(d), self.comm.size)]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def lengths(self, d: int) -> list[int]:
        """The chunk lengths: both operators compress chunks, never the whole vector."""
        return np.diff(self.bounds(d)).tolist()

    def describe_shortest(self, d: int) -> str:
        return f"the smallest two-phase chunk (d = {d} over {self.comm.size} ranks)"

    def reduce(self, x, rng, own=False, out=None):
        c = self.comm
        dtype = check_dtype(x.dtype)
        b = self.bounds(x.size)
        payloads = [self.op.encode(x[b[q] : b[q + 1]], rng) for q in range(c.size)]
        received = c.alltoallv([p.buffer for p in payloads])
        lo, hi = b[c.rank], b[c.rank + 1]

        def reduce_chunk():
            want = self.expected_nbytes(hi - lo, dtype)
            bad = [r for r, buf in enumerate(received) if want is not None and buf.size != want]
            if bad:
                raise ValueError(f"chunk payload of {received[bad[0]].size} bytes from rank {bad[0]}, expected {want}")
            return mean_of(self.op, received, hi - lo, dtype, work=self.work)[0]

        chunk_mean = collectively(c, reduce_chunk)
        down = self.down.encode(chunk_mean, rng)
        bufs = c.allgatherv(down.buffer)

        def assemble():
            result = result_array(out, x.size, dtype)
            for q, buf in enumerate(bufs):
                self.down.decode(buf, int(b[q + 1] - b[q]), dtype, out=result[b[q] : b[q + 1]])
            return result

        mine = None
        if own:
            mine = np.concatenate([self.op.decode(p.buffer, int(b[q + 1] - b[q]), dtype) for q, p in enumerate(payloads)])
        down_bits = sum(payload_bits(self.down, buf, int(b[q + 1] - b[q]), dtype) for q, buf in enumerate(bufs))
        return Aggregate(assemble(), mine, sum(p.nbits for p in payloads), down_bits)


# --- majority vote -----------------------------------------------------------------------------
def vote_from_counts(negatives: np.ndarray, n: int, dtype) -> np.ndarray:
    """sign(Σ_i sign(x_i)) from the count of negative signs; a tie (2·count = n) votes +1,
    the same rule as sign(0) = +1."""
    return np.where(2 * negatives.astype(np.int64) > n, -1.0, 1.0).astype(dtype)


def _add_bit_sliced(inbuf, inoutbuf, datatype) -> None:
    """User-defined MPI op: inout ← in + inout for bit-sliced counters.

    Each element of ``datatype`` is L uint64 words: bit-planes 0 … L−1 of the counters of 64
    coordinates; the planes are added with a ripple-carry adder on whole words.
    """
    planes = datatype.Get_size() // 8
    a = np.frombuffer(inbuf, dtype=np.uint64).reshape(-1, planes)
    b = np.frombuffer(inoutbuf, dtype=np.uint64).reshape(-1, planes)
    carry = np.zeros(a.shape[0], dtype=np.uint64)
    for level in range(planes):
        x, y = a[:, level], b[:, level].copy()  # y is overwritten below
        partial = x ^ y
        b[:, level] = partial ^ carry
        carry = (x & y) | (carry & partial)


class MajorityVote:
    """sign(Σ_i sign(x_i)) on every rank, 1 bit a coordinate each way.

    Parameters
    ----------
    mode : {"server", "allgather", "bitsliced"}
        ``server``: sign bits gathered on ``root``, the vote broadcast as sign bits.
        ``allgather``: every rank counts every rank's sign bits.
        ``bitsliced``: an ``Allreduce`` of ⌈log₂(n+1)⌉ bit-planes per coordinate with a
        user-defined op (`_add_bit_sliced`): L·d bits a message whatever n is.

    Notes
    -----
    Ties (as many negative as non-negative signs, only possible for even n) vote +1.
    References: Bernstein et al., "signSGD with majority vote is communication efficient and
    fault tolerant", ICLR 2019.
    """

    def __init__(self, comm: Communicator, mode: str = "server", root: int = 0):
        if mode not in VOTE_MODES:
            raise ValueError(f"unknown vote mode {mode!r}: choose one of {', '.join(VOTE_MODES)}")
        self.comm, self.mode, self.root = comm, mode, root
        self.sign = get("sign")
        self.planes = max(1, int(comm.size).bit_length())  # ⌈log₂(n+1)⌉
        self._op = None
        self._type = None

    def _negatives(self, bufs, d, dtype):
        """Per coordinate, how many of the sign payloads say negative (no float decode)."""
        count = np.zeros(d, dtype=np.int32)
        for buf in bufs:
            count += np.unpackbits(self.sign.packed_bits(buf, d, dtype), count=d, bitorder="little")
        return count

    def vote(self, x: np.ndarray) -> Aggregate:
        c = self.comm
        dtype = check_dtype(x.dtype)
        d = x.size
        mine = self.sign.encode(x)
        want = self.sign.nbytes_max(d)
        if self.mode == "allgather":
            bufs = c.allgatherv(mine.buffer, want)
            return Aggregate(vote_from_counts(self._negatives(bufs, d, dtype), c.size, dtype), None, d, 0)
        if self.mode == "server":
            bufs = c.gatherv(mine.buffer, self.root, want)
            is_root = c.rank == self.root
            result = collectively(c, lambda: vote_from_counts(self._negatives(bufs, d, dtype), c.size, dtype) if is_root else None)
            down = c.bcast(self.sign.encode(result).buffer if is_root else None, root=self.root)
            return Aggregate(self.sign.decode(down, d, dtype), None, d, d)
        return Aggregate(self._bit_sliced(mine.buffer, d, dtype), None, self.planes * d, 0)

    def _bit_sliced(self, sign_payload, d, dtype):
        from mpi4py import MPI

        if self._op is None:
            self._op = MPI.Op.Create(_add_bit_sliced, commute=True)
            self._type = MPI.UINT64_T.Create_contiguous(self.planes).Commit()
        words = -(-d // 64)
        counters = np.zeros((words, self.planes), dtype=np.uint64)
        bits = np.zeros(words * 8, dtype=np.uint8)
        body = self.sign.packed_bits(sign_payload, d, dtype)
        bits[: body.size] = body
        counters[:, 0] = bits.view("<u8")
        total = self.comm.allreduce(counters, op=self._op, datatype=self._type)
        count = np.zeros(d, dtype=np.int64)
        for level in range(self.planes):
            plane = np.unpackbits(total[:, level].astype("<u8").view(np.uint8), count=d, bitorder="little")
            count += plane.astype(np.int64) << level
        return vote_from_counts(count, self.comm.size, dtype)

    def close(self) -> None:
        """Free the user-defined op and datatype (bit-sliced mode)."""
        if self._op is not None:
            self._op.Free()
            self._type.Free()
            self._op = self._type = None


#: the ``topology`` values of the centralised methods and the aggregator each one builds
AGGREGATORS = {"server": ServerAggregator, "allgather": AllgatherAggregator, "two-phase": TwoPhaseAggregator}


def make_aggregator(kind: str, comm: Communicator, compressor, downlink=None,
                    dim: Optional[int] = None) -> Aggregator:
    """The aggregator called ``kind`` (one of `AGGREGATORS`) for ``compressor``.

    ``downlink`` re-compresses the mean (server: default exact; two-phase: default the uplink
    operator); the allgather aggregator has no downlink and refuses one. With ``dim`` (the
    length of the vectors it will reduce) the operators' parameters are checked against the
    lengths they will compress (`Aggregator.check_dimension`): a ValueError here, not a failure
    inside the first aggregation.
    """
    if kind not in AGGREGATORS:
        raise ValueError(f"unknown aggregation topology {kind!r}: choose one of {', '.join(AGGREGATORS)}")
    if kind == "allgather":
        if downlink is not None:
            raise ValueError("the allgather topology has no downlink: every rank decodes every "
                             "message (use server or two-phase for a downlink compressor)")
        aggregator = AllgatherAggregator(comm, compressor)
    else:
        aggregator = AGGREGATORS[kind](comm, compressor, downlink=downlink)
    if dim is not None:
        aggregator.check_dimension(dim)
    return aggregator
