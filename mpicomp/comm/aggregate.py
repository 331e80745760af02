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

One step costs one collective where the messages have a known size (fixed-size operators:
allgather, the bit-sliced vote) and one per direction through a server or a two-phase
exchange, with no sizes exchanged: the `Communicator`'s ``*_fixed`` collectives carry each
rank's control bits (a stop request, NaN/Inf in its vector, a failure) in a trailer of the same
message. A failure on one rank (a payload of the wrong size, a corrupted buffer, NaN in a
vector) is therefore raised on every rank before anyone enters the next collective, so no rank
hangs: a rank whose vector is not finite sends zeros and the `NON_FINITE` bit (NonFiniteInput
everywhere); where one rank alone decodes (the server, a chunk owner) its failure travels as
the `FAILED` bit in the next collective and only then are the texts exchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import is_device_array, namespace, to_like
from ..compress import Compressor, Payload, device, make_compressor
from ..compress.base import NonFiniteVector, check_dtype
from ..compress.registry import check_lengths
from .agreement import (
    FAILED,
    NON_FINITE,
    STOP,
    AggregationError,
    NonFiniteInput,
    collectively,  # noqa: F401  (re-exported: the aggregators' error agreement)
    failure_text,
)
from .communicator import Communicator
from .fused import either

VOTE_MODES = ("server", "allgather", "bitsliced")
__all__ = ["AggregationError", "NonFiniteInput", "Aggregate", "ServerAggregator",
           "AllgatherAggregator", "TwoPhaseAggregator", "MajorityVote", "make_aggregator"]


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
    own: np.ndarray | None
    bits_up: int
    bits_down: int


def encode_on(op: Compressor, x, rng, staging: device.Staging | None = None) -> Payload:
    """``op.encode(x, rng)`` where ``x`` lives: a device ``x`` is encoded on the device and its
    payload staged to host memory (`mpicomp.compress.device.encode`)."""
    return device.encode(op, x, rng, staging) if is_device_array(x) else op.encode(x, rng)


def encode_finite(op: Compressor, x, rng,
                  staging: device.Staging | None = None) -> tuple[Payload | None, int]:
    """``(op.encode(x, rng), 0)``, or ``(None, NON_FINITE)`` when ``x`` has NaN or Inf (there is
    nothing to encode; the exchange then tells every rank). The operator's own finiteness
    check decides, so ``x`` is scanned once (`encode_on`: on the device for a device ``x``)."""
    try:
        return encode_on(op, x, rng, staging), 0
    except NonFiniteVector:
        return None, NON_FINITE


def decode_like(op: Compressor, buf, d: int, dtype, like, staging=None, out=None):
    """``op.decode(buf, d, dtype)`` on the device of ``like`` (on the host for a host
    ``like``), into ``out`` when given."""
    if not is_device_array(like):
        return op.decode(buf, d, dtype, out=out)
    values = device.decode(op, buf, d, dtype, like, staging)
    if out is None:
        return values
    out[...] = values
    return out


def buffer_of(payload: Payload | None) -> np.ndarray | None:
    return None if payload is None else payload.buffer


def payload_bits(op: Compressor, buf: np.ndarray, d: int, dtype) -> int:
    """Information bits of a received buffer: exact for fixed-size operators, whole bytes of
    the body otherwise."""
    if op.fixed_size:
        return op.body_bits(d, dtype)
    return 8 * (buf.size - op.nbytes_max(0, dtype))


def mean_of(op: Compressor, payloads, d: int, dtype, keep: int | None = None,
            work=None) -> tuple[np.ndarray, np.ndarray | None]:
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


def result_array(out: np.ndarray | None, d: int, dtype) -> np.ndarray:
    """``out`` (checked) or a new array for an aggregation's result."""
    if out is None:
        return np.empty(d, dtype=dtype)
    if out.shape != (d,) or out.dtype != dtype:
        raise ValueError(f"out must be a {np.dtype(dtype)} vector of length {d}, "
                         f"got {out.dtype}{out.shape}")
    return out


class Aggregator:
    """Base: ``reduce(x, rng) -> Aggregate`` is collective (every rank calls it in lockstep)."""

    def __init__(self, comm: Communicator, compressor):
        self.comm = comm
        self.compressor = make_compressor(compressor)
        self.work = Workspace()
        self.staging = device.Staging()  # payload buffers of device vectors
        self.like = None  # the vector of the current reduce: where results live

    def mean_of(self, op, payloads, d: int, dtype, keep: int | None = None, senders=None):
        """`mean_of` on the host, or on the device of the vector being reduced (``senders``:
        the ranks of the payloads, for a corrupted payload's message)."""
        if is_device_array(self.like):
            return device.mean_of(op, payloads, d, dtype, self.like, keep, self.staging,
                                  senders)
        return mean_of(op, payloads, d, dtype, keep=keep, work=self.work)

    def encode(self, op, x, rng):
        """`encode_finite` with this aggregator's staging buffers."""
        return encode_finite(op, x, rng, self.staging)

    def start(self, x) -> None:
        """Begin a reduce of ``x``: results live where ``x`` does; staging buffers recycle."""
        self.like = x
        self.staging.begin()

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
        check_lengths(self.compressor, lengths, where)
        down = getattr(self, "down", self.compressor)
        if down is not self.compressor:
            check_lengths(down, lengths, where, setting="downlink")

    def expected_nbytes(self, d: int, dtype) -> int | None:
        """The size every message must have (fixed-size operators), else None."""
        return self.compressor.nbytes_max(d, dtype) if self.compressor.fixed_size else None

    def reduce(self, x: np.ndarray, rng: np.random.Generator, own: bool = False,
               out=None) -> Aggregate:  # pragma: no cover
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
        self.down = make_compressor(downlink or "identity")
        self.dedicated = dedicated
        self._pending = (0, None)  # the root's control bits and failure from `gather`

    @property
    def is_root(self) -> bool:
        return self.comm.rank == self.root

    def gather(self, x, rng, own: bool = False) -> Aggregate:
        """The uplink half (collective): every sender's compressed ``x`` is averaged on the root.

        Returns an `Aggregate` whose ``mean`` is the average on the root and None elsewhere,
        ``own`` this rank's decoded message (when asked), ``bits_down`` 0. The root's failures
        and every rank's control bits are settled by the `broadcast` that follows (``mean`` is
        None on the root, and ``own`` may be None, only on that error path).
        """
        c = self.comm
        dtype = check_dtype(x.dtype)
        d = x.size
        self.start(x)
        sends = not (self.dedicated and self.is_root)
        payload, flags = self.encode(self.compressor, x, rng) if sends else (None, 0)
        want = self.expected_nbytes(d, dtype)
        failure = None
        if want is None:  # sizes vary: they and the control bits are exchanged first
            buf = buffer_of(payload) if sends else np.empty(0, np.uint8)
            gathered, flags = c.gatherv(buf, root=self.root, flags=flags), 0
        else:
            counts = [0 if (self.dedicated and r == self.root) else want for r in range(c.size)]
            gathered, flags, failure = c.gather_fixed(buffer_of(payload), self.root, counts, flags)
        mean = None
        if self.is_root and failure is None and not flags & NON_FINITE:
            senders = [r for r in range(c.size) if not (self.dedicated and r == self.root)]
            try:
                mean = self.mean_of(self.compressor, [gathered[r] for r in senders], d,
                                    dtype, senders=senders)[0]
            except (ValueError, TypeError) as exc:
                failure = failure_text(exc)
        self._pending = (flags, failure) if self.is_root else (0, None)
        mine = (decode_like(self.compressor, payload.buffer, d, dtype, x, self.staging)
                if own and payload is not None else None)
        return Aggregate(mean, mine, payload.nbits if payload is not None else 0, 0)

    def broadcast(self, vector: np.ndarray | None, rng, d: int, dtype, op=None,
                  out=None) -> tuple[np.ndarray, int]:
        """The downlink half (collective): the root's ``vector`` compressed with ``op`` (default
        the downlink operator), decoded on every rank. Returns ``(values, bits received)``.

        One ``Bcast`` for a fixed-size ``op``; it carries the control bits of the `gather`
        before it, so a failure or NaN anywhere in the step is raised here on every rank."""
        op = self.down if op is None else make_compressor(op)
        dtype = check_dtype(dtype)
        on_device = is_device_array(self.like)
        if on_device:  # the gather's buffers are done with (its results are device arrays)
            self.staging.begin()
        flags, failure = self._pending
        self._pending = (0, None)
        down = None
        if self.is_root and failure is None and not flags & NON_FINITE:
            try:
                down = encode_on(op, vector, rng, self.staging)
            except (ValueError, TypeError) as exc:
                failure = failure_text(exc)
        nbytes = op.nbytes_max(d, dtype) if op.fixed_size else None
        received = self.comm.bcast_fixed(buffer_of(down), self.root, nbytes, flags, failure)
        if on_device:  # the root decodes the payload it encoded, still on the device
            mine = down.buffer if down is not None else received
            result = decode_like(op, mine, d, dtype, self.like, self.staging, out)
        else:
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
        self.start(x)
        payload, flags = self.encode(self.compressor, x, rng)
        want = self.expected_nbytes(x.size, dtype)
        if want is None:  # sizes vary: they and the control bits are exchanged first
            bufs = self.comm.allgatherv(buffer_of(payload), flags=flags)
        else:
            bufs = self.comm.allgather_fixed(buffer_of(payload), want, flags)
        # same buffers on every rank, so the same outcome (and the same error, if any) everywhere
        keep = self.comm.rank if own else None
        mean, mine = self.mean_of(self.compressor, bufs, x.size, dtype, keep=keep,
                                  senders=range(len(bufs)))
        if is_device_array(x):
            if out is not None:
                out[...] = mean
                mean = out
            return Aggregate(mean, mine, payload.nbits, 0)
        result = result_array(out, x.size, dtype)
        result[...] = mean
        return Aggregate(result, mine, payload.nbits, 0)


class TwoPhaseAggregator(Aggregator):
    """Scatter-reduce of compressed chunks, re-compression, allgather.

    Rank q owns coordinates ``bounds[q]:bounds[q+1]`` (``numpy.array_split`` sizes). Each rank
    encodes its n chunks (in chunk order, from its generator) and sends chunk q to rank q;
    rank q averages the n decoded copies in rank order, encodes the average with ``downlink``
    (default: the same operator) and the encoded averages are allgathered.

    Host vectors with fixed-size operators take a pipeline of non-blocking point-to-point
    messages (`Communicator.exchange`; ``pipeline=False`` turns it off), with the same bytes,
    results and counters as the two collectives::

        post the receives of both rounds
        for q in 0 … n−1:   encode chunk q, send it to rank q            (round 1, no copy)
        for r in 0 … n−1:   wait for rank r's copy of my chunk, decode-add it in float64
        encode my chunk's mean, send it to every rank                    (round 2)
        for q in 0 … n−1:   wait for rank q's mean, decode it into its place in the result

    So encoding overlaps with moving the chunks already encoded, and each copy or mean is
    decoded when it arrives while the later ones are still moving (rank order is kept: sums
    stay bit for bit). A rank that waits sleeps rather than spins (`communicator.wait_all`),
    leaving the core to ranks that still compute. Device vectors and operators whose message
    sizes vary take the two collectives (`Communicator.alltoall_fixed` or ``alltoallv``, then
    ``allgather_fixed`` or ``allgatherv``).
    """

    def __init__(self, comm, compressor, downlink=None, pipeline: bool = True):
        super().__init__(comm, compressor)
        self.down = make_compressor(downlink) if downlink is not None else self.compressor
        self.pipeline = pipeline

    def bounds(self, d: int) -> np.ndarray:
        sizes = [len(c) for c in np.array_split(np.empty(d), self.comm.size)]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def lengths(self, d: int) -> list[int]:
        """The chunk lengths: both operators compress chunks, never the whole vector."""
        return np.diff(self.bounds(d)).tolist()

    def describe_shortest(self, d: int) -> str:
        return f"the smallest two-phase chunk (d = {d} over {self.comm.size} ranks)"

    def reduce(self, x, rng, own=False, out=None):
        if (self.pipeline and not is_device_array(x) and self.compressor.fixed_size
                and self.down.fixed_size):
            return self._pipelined(x, rng, own, out)
        return self._collective(x, rng, own, out)

    def _pipelined(self, x, rng, own, out):
        """`reduce` as a pipeline of point-to-point rounds (the class notes give the scheme).

        Failures follow the collectives' protocol, so every message is still sent and every
        rank raises the same error once round 2 is in: a rank whose vector has NaN/Inf sends
        zeros from its first non-finite chunk on, with `NON_FINITE` (NonFiniteInput); an
        exception while this rank encodes or an owner averages (a copy that does not decode or
        has the wrong size) is sent as `FAILED` and its text (AggregationError, chained to the
        exception on the rank where it happened); a mean that does not decode raises its
        DecodeError on every rank. ``out`` may then hold part of the result. An exception that
        ends this rank's part at once (an MPI error, KeyboardInterrupt) abandons the rounds.
        """
        c, op = self.comm, self.compressor
        n, me = c.size, c.rank
        dtype = check_dtype(x.dtype)
        b = self.bounds(x.size)
        lengths = np.diff(b).tolist()
        up = [op.nbytes_max(m, dtype) for m in lengths]
        down_counts = [self.down.nbytes_max(m, dtype) for m in lengths]
        self.start(x)
        scatter = c.exchange("alltoall", up, [up[me]] * n)
        gather = c.exchange("allgather", down_counts[me], down_counts)
        try:
            payloads, flags, cause = self._scatter(scatter, x, b, rng)
            down, flags, cause = self._owner_mean(scatter, payloads[me], flags, cause,
                                                  lengths[me], up[me], dtype, rng)
            gather.send_all(buffer_of(down), flags | (FAILED if cause else 0))
            size = down_counts[me] if down is None else down.nbytes
            result = result_array(out, x.size, dtype)
            failed, bad_mean = flags & (NON_FINITE | FAILED) or cause, None
            for q in range(n):  # round 2: each mean is decoded as soon as it is there
                buf, bits, claimed = (down, 0, size) if q == me else gather.take(q)
                failed = failed or bits & (FAILED | NON_FINITE) or claimed != down_counts[q]
                if not (failed or bad_mean):
                    try:
                        self.down.decode(buf, lengths[q], dtype, out=result[b[q] : b[q + 1]])
                    except (ValueError, TypeError) as exc:  # the same on every rank
                        bad_mean = exc
            scatter.close()
            gather.close()
        except BaseException:
            scatter.abandon()
            gather.abandon()
            raise
        try:
            gather.settle(flags, cause and failure_text(cause), size)
        except AggregationError as exc:
            if cause is None:
                raise
            raise exc from cause  # on the rank where it happened, its own traceback too
        if bad_mean is not None:
            raise bad_mean
        mine = None
        if own:
            mine = np.empty(x.size, dtype)
            for q, p in enumerate(payloads):
                op.decode(p.buffer, lengths[q], dtype, out=mine[b[q] : b[q + 1]])
        return Aggregate(result, mine, sum(p.nbits for p in payloads),
                         sum(self.down.body_bits(m, dtype) for m in lengths))

    def _scatter(self, scatter, x, b, rng):
        """Round 1 on the sending side: chunk q encoded and sent to rank q, in chunk order.
        Returns ``(payloads, control bits, exception or None)``; zeros go out from the first
        chunk that is not finite, or from the first exception on (then nothing is encoded)."""
        flags, cause, payloads = 0, None, []
        for q in range(self.comm.size):
            payload = None
            if cause is None:
                try:
                    payload, bits = self.encode(self.compressor, x[b[q] : b[q + 1]], rng)
                    flags |= bits
                except Exception as exc:
                    cause = exc
            payloads.append(None if flags or cause else payload)
            scatter.send(q, buffer_of(payloads[q]), flags | (FAILED if cause else 0))
        return payloads, flags, cause

    def _owner_mean(self, scatter, mine, flags: int, cause, d: int, want: int, dtype, rng):
        """Round 1 on the receiving side: the rank-order float64 mean of this rank's chunk,
        each copy decoded and added as it arrives, re-encoded with the downlink operator.

        Returns ``(down payload or None, control bits received, exception or None)`` with the
        outcome of the collective path: NaN/Inf anywhere wins, then this rank's own failure,
        then the first copy of the wrong size, then the first copy that does not decode."""
        c, op = self.comm, self.compressor
        acc = self.work.get("acc", d, np.float64)
        acc.fill(0.0)
        scratch = self.work.get("scratch", d, dtype)
        wrong_size = bad_copy = None
        for r in range(c.size):
            if r == c.rank:
                buf, size = mine, want if mine is None else mine.nbytes
            else:
                buf, bits, size = scatter.take(r)
                flags |= bits
            if size != want and wrong_size is None:
                wrong_size = ValueError(f"chunk payload of {size} bytes from rank {r}, "
                                        f"expected {want}")
            if flags & (NON_FINITE | FAILED) or cause or wrong_size or bad_copy:
                continue  # nothing more to add: round 2 carries the outcome
            try:
                op.decode_add(buf, d, dtype, acc, scratch)
            except Exception as exc:
                bad_copy = exc
        cause = cause or wrong_size or bad_copy
        if flags & (NON_FINITE | FAILED) or cause:
            return None, flags, None if flags & NON_FINITE else cause
        mean = self.work.get("mean", d, dtype)
        np.divide(acc, c.size, out=mean, casting="unsafe")
        try:
            return encode_on(self.down, mean, rng), flags, None
        except Exception as exc:
            return None, flags, exc

    def _collective(self, x, rng, own=False, out=None):
        """`reduce` with one ``Alltoallv`` and one ``Allgather(v)`` (device vectors, operators
        of varying message sizes, ``pipeline=False``)."""
        c = self.comm
        dtype = check_dtype(x.dtype)
        b = self.bounds(x.size)
        lengths = np.diff(b)
        self.start(x)
        chunks = [self.encode(self.compressor, x[b[q] : b[q + 1]], rng) for q in range(c.size)]
        flags = either(bits for _, bits in chunks)
        payloads = [None if flags else p for p, _ in chunks]
        lo, hi = b[c.rank], b[c.rank + 1]
        want = self.expected_nbytes(hi - lo, dtype)
        if self.compressor.fixed_size:
            counts = [self.compressor.nbytes_max(int(n), dtype) for n in lengths]
            received, flags, sizes = c.alltoall_fixed([buffer_of(p) for p in payloads], counts,
                                                      want, flags)
        else:  # sizes vary: they and the control bits are exchanged first
            received = c.alltoallv([buffer_of(p) for p in payloads], flags=flags)
            sizes, flags = [buf.size for buf in received], 0
        down, failure = None, None
        if not flags & NON_FINITE:
            try:  # this rank's chunk: the mean of its n copies, re-compressed
                bad = [r for r, size in enumerate(sizes) if want is not None and size != want]
                if bad:
                    raise ValueError(f"chunk payload of {sizes[bad[0]]} bytes from rank {bad[0]}, "
                                     f"expected {want}")
                chunk_mean = self.mean_of(self.compressor, received, hi - lo, dtype,
                                          senders=range(c.size))[0]
                down = encode_on(self.down, chunk_mean, rng, self.staging)
            except (ValueError, TypeError) as exc:
                failure = failure_text(exc)
        if self.down.fixed_size:
            counts = [self.down.nbytes_max(int(n), dtype) for n in lengths]
            bufs = c.allgather_fixed(buffer_of(down), counts, flags, failure)
        else:
            bufs = c.allgatherv(buffer_of(down), flags=flags, failure=failure)

        def assemble():
            if is_device_array(x):  # one upload; this rank's chunk read where it was encoded
                mine = [down.buffer if q == c.rank and down is not None else buf
                        for q, buf in enumerate(bufs)]
                whole = out if out is not None else namespace(x).empty_like(x)
                return device.decode_each(self.down, mine, lengths, dtype, x, self.staging,
                                          out=whole)
            result = result_array(out, x.size, dtype)
            for q, buf in enumerate(bufs):
                self.down.decode(buf, int(b[q + 1] - b[q]), dtype, out=result[b[q] : b[q + 1]])
            return result

        mine = None
        if own:
            if is_device_array(x):  # this rank's own payloads: decoded where they were encoded
                mine = device.decode_each(self.compressor, [p.buffer for p in payloads],
                                          lengths, dtype, x, self.staging,
                                          out=namespace(x).empty_like(x))
            else:
                mine = np.concatenate([self.compressor.decode(p.buffer, int(n), dtype)
                                       for p, n in zip(payloads, lengths)])
        down_bits = sum(payload_bits(self.down, buf, int(b[q + 1] - b[q]), dtype)
                        for q, buf in enumerate(bufs))
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
        self.sign = make_compressor("sign")
        self.planes = max(1, int(comm.size).bit_length())  # ⌈log₂(n+1)⌉
        self._mpi_op = None
        self._type = None
        self.staging = device.Staging()  # sign payloads of device vectors

    def _negatives(self, bufs, d, dtype):
        """Per coordinate, how many of the sign payloads say negative (no float decode)."""
        count = np.zeros(d, dtype=np.int32)
        for buf in bufs:
            count += np.unpackbits(self.sign.packed_bits(buf, d, dtype), count=d, bitorder="little")
        return count

    def vote(self, x: np.ndarray, flags: int = 0) -> Aggregate:
        """The vote on ``x``'s signs (collective): one ``Allgather`` or ``Allreduce``, or a
        ``Gather`` and a ``Bcast`` through the server. ``flags``: control bits the caller adds
        (`NON_FINITE` when the vector it derived ``x`` from has NaN/Inf)."""
        c = self.comm
        dtype = check_dtype(x.dtype)
        d = x.size
        if is_device_array(x):  # signs packed on the device; the count and vote on the host
            return self._staged_vote(x, flags)
        mine, own_flags = encode_finite(self.sign, x, None)
        flags |= own_flags
        mine = None if flags & NON_FINITE else mine
        want = self.sign.nbytes_max(d)
        if self.mode == "allgather":
            bufs = c.allgather_fixed(buffer_of(mine), want, flags)
            return Aggregate(vote_from_counts(self._negatives(bufs, d, dtype), c.size, dtype),
                             None, d, 0)
        if self.mode == "server":
            bufs, flags, failure = c.gather_fixed(buffer_of(mine), self.root, want, flags)
            down = None
            if c.rank == self.root and failure is None and not flags & NON_FINITE:
                try:
                    counted = vote_from_counts(self._negatives(bufs, d, dtype), c.size, dtype)
                    down = self.sign.encode(counted)
                except (ValueError, TypeError) as exc:
                    failure = failure_text(exc)
            got = c.bcast_fixed(buffer_of(down), self.root, want, flags, failure)
            return Aggregate(self.sign.decode(got, d, dtype), None, d, d)
        return Aggregate(self._bit_sliced(buffer_of(mine), d, dtype, flags), None,
                         self.planes * d, 0)

    def _staged_vote(self, x, flags: int) -> Aggregate:
        """`vote` of a device vector: its sign payload packed on the device and staged; the
        vote, counted on the host, uploaded (d/8 bytes down, d values up)."""
        self.staging.begin()
        try:
            payload = device.encode(self.sign, x, None, self.staging)
        except NonFiniteVector:
            payload, flags = None, flags | NON_FINITE
        host = (np.zeros(x.size, dtype=x.dtype) if payload is None
                else self.sign.decode(payload.buffer, x.size, x.dtype))
        result = self.vote(host, flags)
        return Aggregate(to_like(result.mean, x), None, result.bits_up, result.bits_down)

    def _bit_sliced(self, sign_payload, d, dtype, flags: int):
        """The ``Allreduce`` of bit-sliced counters; one more element carries the control bits
        as counters of their own (a bit is set somewhere iff its count is not zero)."""
        from mpi4py import MPI

        if self._mpi_op is None:
            self._mpi_op = MPI.Op.Create(_add_bit_sliced, commute=True)
            self._type = MPI.UINT64_T.Create_contiguous(self.planes).Commit()
        words = -(-d // 64)
        counters = np.zeros((words + 1, self.planes), dtype=np.uint64)
        if sign_payload is not None:
            bits = np.zeros(words * 8, dtype=np.uint8)
            body = self.sign.packed_bits(sign_payload, d, dtype)
            bits[: body.size] = body
            counters[:words, 0] = bits.view("<u8")
        counters[words, 0] = self.comm.control(flags)
        total = self.comm.allreduce(counters, op=self._mpi_op, datatype=self._type,
                                    counted=counters[:words].nbytes)
        control = np.bitwise_or.reduce(total[words], initial=np.uint64(0))
        self.comm.agree(int(control & np.uint64(STOP | NON_FINITE)))
        total = total[:words]
        count = np.zeros(d, dtype=np.int64)
        for level in range(self.planes):
            plane = np.unpackbits(total[:, level].astype("<u8").view(np.uint8), count=d,
                                  bitorder="little")
            count += plane.astype(np.int64) << level
        return vote_from_counts(count, self.comm.size, dtype)

    def close(self) -> None:
        """Free the user-defined op and datatype (bit-sliced mode)."""
        if self._mpi_op is not None:
            self._mpi_op.Free()
            self._type.Free()
            self._mpi_op = self._type = None


#: the ``topology`` values of the centralised methods and the aggregator each one builds
AGGREGATORS = {"server": ServerAggregator, "allgather": AllgatherAggregator,
               "two-phase": TwoPhaseAggregator}


def make_aggregator(kind: str, comm: Communicator, compressor, downlink=None,
                    dim: int | None = None) -> Aggregator:
    """The aggregator called ``kind`` (one of `AGGREGATORS`) for ``compressor``.

    ``downlink`` re-compresses the mean (server: default exact; two-phase: default the uplink
    operator); the allgather aggregator has no downlink and refuses one. With ``dim`` (the
    length of the vectors it will reduce) the operators' parameters are checked against the
    lengths they will compress (`Aggregator.check_dimension`): a ValueError here, not a failure
    inside the first aggregation.
    """
    if kind not in AGGREGATORS:
        raise ValueError(f"unknown aggregation topology {kind!r}: choose one of "
                         f"{', '.join(AGGREGATORS)}")
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
