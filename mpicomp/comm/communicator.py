"""Byte collectives over an ``MPI.Intracomm`` with traffic counters and network-model time.

Every collective moves flat ``uint8`` buffers with mpi4py's upper-case (buffer) calls.
Variable-size collectives exchange the sizes first, so every rank knows every message size: a
rank whose message does not have the size the caller requires is reported on every rank with
the same error, instead of a hang or a truncated receive.

Counting convention (logical point-to-point traffic, independent of MPI's internal algorithm):
a rank's message counts once in ``bytes_sent`` per rank that receives it, and ``bytes_received``
counts the bytes of the other ranks' messages that reach this rank. Summed over ranks, sent
equals received. ``Allreduce`` is counted as a ring allreduce moves it: 2(n−1)/n·m each way.

The fused collectives of the step path (`FusedCollectives`, `mpicomp.comm.fused`) are
methods of `Communicator` too, and `Exchange` is their non-blocking, point-to-point form for
pipelines (`Communicator.exchange`): messages go out as soon as each is ready and are taken as
they arrive, counted as the collective they replace.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..backend import to_host
from .agreement import FAILED
from .fused import TRAILER, FusedCollectives, PayloadSizeError, either
from .netmodel import NetworkModel, make_network_model


@dataclass
class CallStats:
    """Counters of one kind of call on one rank."""

    calls: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0

    def add(self, other: CallStats) -> None:
        self.calls += other.calls
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.seconds += other.seconds
        self.model_seconds += other.model_seconds


@dataclass
class CommStats:
    """Per-operation counters of a `Communicator` on this rank."""

    by_op: dict = field(default_factory=lambda: defaultdict(CallStats))

    def total(self) -> CallStats:
        """Sum over the kinds of call, in name order (so a restored copy sums the same way)."""
        out = CallStats()
        for op in sorted(self.by_op):
            out.add(self.by_op[op])
        return out

    def to_json(self) -> str:
        """The counters as JSON (checkpoints); `restore` puts them back exactly."""
        return json.dumps({op: dataclasses.astuple(s) for op, s in sorted(self.by_op.items())})

    def restore(self, text: str) -> None:
        """Replace the counters with those of `to_json`."""
        self.by_op.clear()
        for op, values in json.loads(text).items():
            self.by_op[op] = CallStats(*values)

    def reset(self) -> None:
        self.by_op.clear()


class Communicator(FusedCollectives):
    """Byte collectives with counters.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Intracomm
        The communicator to use (never a module-level COMM_WORLD).
    network : str or NetworkModel, optional
        Profile for simulated time (``"1gbe"``, ``"10gbe"``, ``"100gib"``,
        ``"custom:alpha=…,beta=…"``); without one, ``model_seconds`` stays 0.
    gpu_aware : bool
        The run asked for a CUDA-aware MPI (``--gpu-aware``, checked by
        `mpicomp.comm.cuda_aware`). MPI is handed host buffers either way: a device array
        given to a collective is copied to the host first (`mpicomp.backend.to_host`).
    """

    def __init__(self, mpi_comm, network: str | NetworkModel | None = None,
                 gpu_aware: bool = False):
        from mpi4py import MPI

        self.MPI = MPI
        self.mpi_comm = mpi_comm
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        self.network = make_network_model(network)
        self.gpu_aware = gpu_aware
        self.stats = CommStats()
        #: this rank was asked to stop (a signal); sent in the control bits of each exchange
        self.stop_requested = False
        #: some rank asked to stop, as learnt from an exchange (the run stops after the step)
        self.stop_agreed = False
        self._layouts = {}  # the fused collectives' message layouts, by sizes
        self._inboxes = {}  # `Exchange` receive buffers by kind, reused (grown when too small)
        self._rounds = 0  # `Exchange` rounds started: each takes the next tag
        #: buffers of the sends of abandoned `Exchange` rounds, kept while MPI may read them
        self.abandoned = []

    # -- bookkeeping -----------------------------------------------------------------------
    def _record(self, op: str, t0: float, sent: int, received: int, model: float) -> None:
        s = self.stats.by_op[op]
        s.calls += 1
        s.bytes_sent += int(sent)
        s.bytes_received += int(received)
        s.seconds += time.perf_counter() - t0
        s.model_seconds += model

    def _model(self, kind: str, *args) -> float:
        return getattr(self.network, kind)(*args) if self.network else 0.0

    def _bytes(self, buf) -> np.ndarray:
        buf = to_host(buf)
        if buf.dtype != np.uint8 or buf.ndim != 1:
            raise TypeError(f"byte collectives take flat uint8 buffers, got {buf.dtype}{buf.shape}")
        return buf

    @staticmethod
    def _empty(n: int) -> np.ndarray:
        return np.empty(n, dtype=np.uint8)

    def sizes(self, nbytes: int, flags: int | None = None,
              failure: str | None = None) -> np.ndarray:
        """Every rank's ``nbytes`` (an ``Allgather`` of one int64, not counted as traffic).

        With ``flags`` (control bits; `FAILED` added for a ``failure``) they travel in the same
        ``Allgather`` and are agreed (`agree`, `settle`) before the sizes are returned."""
        if flags is None:
            out = np.empty(self.size, dtype=np.int64)
            self.mpi_comm.Allgather([np.array([nbytes], np.int64), self.MPI.INT64_T],
                                [out, self.MPI.INT64_T])
            return out
        both = np.empty((self.size, 2), dtype=np.int64)
        mine = np.array([nbytes, self.control(flags | (FAILED if failure else 0))], np.int64)
        self.mpi_comm.Allgather([mine, self.MPI.INT64_T], [both, self.MPI.INT64_T])
        self.settle(self.agree(both[:, 1]), failure)
        return both[:, 0].copy()

    def check_sizes(self, sizes: np.ndarray, expected, what: str) -> None:
        """Raise PayloadSizeError (on every rank: ``sizes`` is the same everywhere) on a mismatch.

        ``expected`` is one size for all ranks, one per rank, or None (anything goes).
        """
        if expected is None:
            return
        want = expected if isinstance(expected, np.ndarray) else \
            np.broadcast_to(np.asarray(expected, dtype=np.int64), sizes.shape)
        bad = np.flatnonzero(sizes != want)
        if bad.size:
            detail = ", ".join(f"rank {r}: {sizes[r]} bytes, expected {want[r]}" for r in bad[:8])
            raise PayloadSizeError(f"{what}: payload of the wrong size from {detail}")

    # -- collectives -----------------------------------------------------------------------
    def allgatherv(self, buf, expected=None, flags: int | None = None,
                   failure: str | None = None) -> list:
        """Every rank's buffer, on every rank (``expected``: the size each must have).

        ``flags`` and ``failure``: control bits and this rank's failure, which travel with the
        sizes and are settled (`sizes`) before the data moves; ``buf`` None sends nothing."""
        t0 = time.perf_counter()
        buf = np.empty(0, np.uint8) if buf is None else self._bytes(buf)
        sizes = self.sizes(buf.size, flags, failure)
        self.check_sizes(sizes, expected, "allgatherv")
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        recv = self._empty(int(sizes.sum()))
        if self.size == 1:
            recv[:] = buf
        elif (sizes == sizes[0]).all():
            self.mpi_comm.Allgather([buf, self.MPI.BYTE], [recv, self.MPI.BYTE])
        else:
            self.mpi_comm.Allgatherv([buf, self.MPI.BYTE], [recv, sizes, displs, self.MPI.BYTE])
        others = int(sizes.sum() - sizes[self.rank])
        self._record("allgatherv", t0, buf.size * (self.size - 1), others,
                     self._model("allgather", self.size, int(sizes.max())))
        return [recv[o : o + c] for o, c in zip(displs, sizes)]

    def gatherv(self, buf, root: int = 0, expected=None,
                flags: int | None = None) -> list | None:
        """All buffers on ``root`` (a list there, None elsewhere); ``flags`` as `allgatherv`."""
        t0 = time.perf_counter()
        buf = np.empty(0, np.uint8) if buf is None else self._bytes(buf)
        sizes = self.sizes(buf.size, flags)
        self.check_sizes(sizes, expected, "gatherv")
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        is_root = self.rank == root
        recv = self._empty(int(sizes.sum())) if is_root else None
        if self.size == 1:
            recv[:] = buf
        else:
            spec = [recv, sizes, displs, self.MPI.BYTE] if is_root else None
            self.mpi_comm.Gatherv([buf, self.MPI.BYTE], spec, root=root)
        sent = 0 if is_root else buf.size
        received = int(sizes.sum() - sizes[root]) if is_root else 0
        self._record("gatherv", t0, sent, received,
                     self._model("gather", self.size, int(sizes.max())))
        return [recv[o : o + c] for o, c in zip(displs, sizes)] if is_root else None

    def bcast(self, buf, root: int = 0) -> np.ndarray:
        """``root``'s buffer on every rank (other ranks pass None or anything)."""
        t0 = time.perf_counter()
        is_root = self.rank == root
        if is_root:
            buf = self._bytes(buf)
        n = np.array([buf.size if is_root else 0], np.int64)
        self.mpi_comm.Bcast([n, self.MPI.INT64_T], root=root)
        out = buf if is_root else self._empty(int(n[0]))
        if self.size > 1:
            self.mpi_comm.Bcast([out, self.MPI.BYTE], root=root)
        m = int(n[0])
        self._record("bcast", t0, m * (self.size - 1) if is_root else 0, 0 if is_root else m,
                     self._model("bcast", self.size, m))
        return out

    def alltoallv(self, bufs: Sequence, flags: int | None = None) -> list:
        """Personalised exchange: ``bufs[q]`` goes to rank q; returns what each rank sent here.

        ``flags``: control bits sent with the sizes; every rank agrees on those it receives
        (`agree`), so each rank learns every rank's bits (None entries of ``bufs`` send
        nothing)."""
        t0 = time.perf_counter()
        if len(bufs) != self.size:
            raise ValueError(f"alltoallv needs one buffer per rank ({self.size}), got {len(bufs)}")
        bufs = [np.empty(0, np.uint8) if b is None else self._bytes(b) for b in bufs]
        send_sizes = np.array([b.size for b in bufs], dtype=np.int64)
        recv_sizes = np.empty(self.size, dtype=np.int64)
        if flags is None:
            self.mpi_comm.Alltoall([send_sizes, self.MPI.INT64_T], [recv_sizes, self.MPI.INT64_T])
        else:
            pairs = np.empty((self.size, 2), dtype=np.int64)
            mine = np.column_stack([send_sizes, np.full(self.size, self.control(flags))])
            self.mpi_comm.Alltoall([np.ascontiguousarray(mine), self.MPI.INT64_T],
                               [pairs, self.MPI.INT64_T])
            self.agree(pairs[:, 1])
            recv_sizes[:] = pairs[:, 0]
        sdispl = np.concatenate([[0], np.cumsum(send_sizes)[:-1]])
        rdispl = np.concatenate([[0], np.cumsum(recv_sizes)[:-1]])
        send = np.concatenate(bufs) if bufs else np.empty(0, np.uint8)
        recv = self._empty(int(recv_sizes.sum()))
        self.mpi_comm.Alltoallv([send, send_sizes, sdispl, self.MPI.BYTE],
                                [recv, recv_sizes, rdispl, self.MPI.BYTE])
        me = self.rank
        biggest = max(int(send_sizes.max(initial=0)), int(recv_sizes.max(initial=0)))
        self._record("alltoallv", t0, int(send_sizes.sum() - send_sizes[me]),
                     int(recv_sizes.sum() - recv_sizes[me]),
                     self._model("alltoall", self.size, biggest))
        return [recv[o : o + c] for o, c in zip(rdispl, recv_sizes)]

    def neighbor_allgatherv(self, graph_comm, buf, sizes=None) -> list:
        """This rank's buffer to every out-neighbour of the distributed-graph communicator
        ``graph_comm``; returns one buffer per in-neighbour, in the graph's source order.

        ``sizes``: every rank's buffer size (indexed by rank), when the caller knows them; the
        in-neighbours' sizes are otherwise exchanged first."""
        t0 = time.perf_counter()
        buf = self._bytes(buf)
        sources, destinations, _ = graph_comm.Get_dist_neighbors()
        if sizes is not None:
            sizes = np.asarray(sizes, dtype=np.int64)[np.asarray(sources, dtype=np.int64)]
        else:
            sizes = np.empty(len(sources), dtype=np.int64)
            graph_comm.Neighbor_allgather([np.array([buf.size], np.int64), self.MPI.INT64_T],
                                          [sizes, self.MPI.INT64_T])
        displs = np.cumsum(sizes) - sizes  # also right for a rank without in-neighbours
        recv = self._empty(int(sizes.sum()))
        graph_comm.Neighbor_allgatherv([buf, self.MPI.BYTE], [recv, sizes, displs, self.MPI.BYTE])
        self._record("neighbor_allgatherv", t0, buf.size * len(destinations), int(sizes.sum()),
                     self._model("neighbor", len(destinations),
                                 max(buf.size, int(sizes.max(initial=0)))))
        return [recv[o : o + c] for o, c in zip(displs, sizes)]

    def allreduce(self, array: np.ndarray, op=None, datatype=None,
                  counted: int | None = None) -> np.ndarray:
        """``MPI.Allreduce`` of a numeric array (``op`` default SUM; a user-defined op needs
        ``datatype``); counted as a ring allreduce moves it (``counted``: the bytes that are
        payload, when the array also carries control words)."""
        t0 = time.perf_counter()
        array = to_host(array)
        out = np.empty_like(array)
        op = op or self.MPI.SUM
        if datatype is None:
            self.mpi_comm.Allreduce(array, out, op=op)
        else:
            count = array.nbytes // datatype.Get_size()
            self.mpi_comm.Allreduce([array, count, datatype], [out, count, datatype], op=op)
        m = array.nbytes if counted is None else int(counted)
        moved = 2 * (self.size - 1) * m // self.size
        self._record("allreduce", t0, moved, moved, self._model("allreduce", self.size, m))
        return out

    def exchange(self, kind: str, send_counts, recv_counts) -> Exchange:
        """Start a non-blocking `Exchange` round (collective: every rank starts the same rounds
        in the same order): this rank's receives are posted at once.

        ``kind`` is the collective it stands for, ``"alltoall"`` (``send_counts[q]`` bytes to
        rank q) or ``"allgather"`` (one message for all, ``send_counts`` one size);
        ``recv_counts[r]``: the bytes rank r sends here."""
        if kind not in ("alltoall", "allgather"):
            raise ValueError(f"unknown exchange kind {kind!r}: alltoall or allgather")
        tags = int(self.mpi_comm.Get_attr(self.MPI.TAG_UB)) + 1 - Exchange.FIRST_TAG
        tag = Exchange.FIRST_TAG + self._rounds % tags
        self._rounds += 1
        return Exchange(self, kind, tag, send_counts, recv_counts)

    def inbox(self, kind: str, nbytes: int) -> np.ndarray:
        """The receive buffer (at least ``nbytes``) that rounds of ``kind`` reuse."""
        buf = self._inboxes.get(kind)
        if buf is None or buf.size < nbytes:
            buf = self._inboxes[kind] = np.empty(nbytes, dtype=np.uint8)
        return buf


def wait_all(MPI, requests) -> None:
    """``MPI.Request.Waitall`` that leaves the core to other processes while nothing arrives.

    It tests, and once it has waited `SPIN` seconds it sleeps between tests for a tenth of the
    time waited so far (at most `NAP`): a long wait ends at most about 10 % late, and a rank
    that waits does not take CPU time from the ranks it waits for (shared memory with more
    ranks than cores, where MPI's own busy wait would).
    """
    if not requests or MPI.Request.Testall(requests):
        return
    t0 = time.perf_counter()
    while not MPI.Request.Testall(requests):
        waited = time.perf_counter() - t0
        if waited > SPIN:
            time.sleep(min(waited / 10, NAP))


#: `wait_all`: seconds of busy testing before the first sleep, and the longest sleep
SPIN, NAP = 50e-6, 2e-3


class Exchange:
    """One non-blocking round of messages of known sizes between every pair of ranks.

    The point-to-point form of `FusedCollectives.alltoall_fixed` and ``allgather_fixed`` for
    pipelines: the receives are posted when the round starts (`Communicator.exchange`), each
    message is sent as soon as the caller has it (`send`, `send_all`) and each sender's message
    is taken as soon as it is there (`take`), so encoding, moving and decoding overlap. A message
    is the payload, sent from the caller's buffer without a copy when it has its expected size
    (else cut or zero-padded, as the fused collectives do), then an 8-byte trailer (`TRAILER`:
    the sender's control bits and the payload's real size); each round has its own tag.

    Every rank sends every message of the round, zeros and control bits if it failed (the
    fused collectives' protocol), then `close` waits for its sends and counts the round as the
    collective it replaces (same bytes and network-model time) and `settle` raises the agreed
    outcome on every rank. `abandon` is for the exceptions that end a rank's part at once. The
    received views live in a buffer the next round of the same kind reuses.
    """

    FIRST_TAG = 1 << 10  # rounds take tags FIRST_TAG … MPI.TAG_UB in turn

    def __init__(self, comm: Communicator, kind: str, tag: int, send_counts, recv_counts):
        self.comm, self.kind, self.tag = comm, kind, tag
        n, me = comm.size, comm.rank
        self.send_counts = ([int(send_counts)] * n if kind == "allgather"
                            else [int(c) for c in send_counts])
        self.recv_counts = [int(c) for c in recv_counts]
        self.t0 = time.perf_counter()
        framed = np.array(self.recv_counts, dtype=np.int64) + TRAILER.size
        starts = np.cumsum(framed) - framed
        self.inbox = comm.inbox(kind, int(framed.sum()))
        self.frames = [self.inbox[s : s + f] for s, f in zip(starts, framed)]
        self.received = {}  # sender -> request pair of its payload and trailer
        self.taken = {}  # sender -> (flags, claimed size) of its message
        self.sends = []
        self.kept = []  # the buffers of sends in flight
        irecv = comm.mpi_comm.Irecv
        for r in range(n):
            if r != me:
                frame, size = self.frames[r], self.recv_counts[r]
                self.received[r] = [irecv([frame[:size], comm.MPI.BYTE], r, tag),
                                    irecv([frame[size:], comm.MPI.BYTE], r, tag)]

    def send(self, dest: int, buf, flags: int = 0) -> None:
        """``buf`` (None: zeros) to rank ``dest`` with ``flags`` (this rank's stop request is
        added); the message to oneself is not sent (the caller keeps it)."""
        if dest == self.comm.rank:
            return
        c, size = self.comm, self.send_counts[dest]
        real = size if buf is None else int(buf.size)
        body = c._bytes(buf) if buf is not None and real == size else None
        if body is None:  # zeros, or a payload of the wrong size: framed as the fused calls do
            body = c._frame(None if buf is None else c._bytes(buf), size, 0)[:size]
        trailer = np.frombuffer(TRAILER.pack(c.control(flags), real), dtype=np.uint8)
        self.kept += [body, trailer]
        self.sends += [c.mpi_comm.Isend([body, c.MPI.BYTE], dest, self.tag),
                       c.mpi_comm.Isend([trailer, c.MPI.BYTE], dest, self.tag)]

    def send_all(self, buf, flags: int = 0) -> None:
        """`send` ``buf`` to every other rank."""
        for dest in range(self.comm.size):
            self.send(dest, buf, flags)

    def take(self, source: int) -> tuple[np.ndarray, int, int]:
        """``(payload, flags, claimed size)`` of rank ``source``'s message, once it is there
        (not for this rank's own)."""
        wait_all(self.comm.MPI, self.received[source])
        frame, size = self.frames[source], self.recv_counts[source]
        flags, claimed = TRAILER.unpack_from(frame, size)
        self.taken[source] = (flags, claimed)
        return frame[:size], flags, claimed

    def close(self) -> None:
        """Wait for this rank's sends and count the round."""
        c, me = self.comm, self.comm.rank
        wait_all(c.MPI, self.sends)
        self.kept.clear()
        biggest = max(self.send_counts + self.recv_counts)
        sent = sum(self.send_counts) - self.send_counts[me]
        c._record(self.kind + "v", self.t0, sent, sum(self.recv_counts) - self.recv_counts[me],
                  c._model(self.kind, c.size, biggest))

    def settle(self, flags: int = 0, failure: str | None = None,
               size: int | None = None) -> None:
        """After `close`, what ``allgather_fixed`` does once its data is in (every sender's
        message taken; ``flags``, ``failure`` and the real ``size`` of the payload: this
        rank's): agree on every rank's control bits, raise the failures on every rank, then a
        PayloadSizeError on every rank for a payload whose size is not the expected one."""
        c = self.comm
        bits = c.control(flags | (FAILED if failure else 0))
        c.settle(c.agree(bits | either(f for f, _ in self.taken.values())), failure)
        claimed = [self.taken[r][1] if r in self.taken else self.recv_counts[r]
                   for r in range(c.size)]
        if size is not None:
            claimed[c.rank] = size
        c.check_sizes(np.array(claimed, dtype=np.int64),
                      np.array(self.recv_counts, dtype=np.int64), self.kind + "v")

    def abandon(self) -> None:
        """Leave the round unfinished (an exception that ends this rank's part of it): nothing
        is waited for, so the exception propagates at once. The requests, the buffers of this
        rank's sends and the receive buffer stay alive for MPI (`Communicator.abandoned`), and
        later rounds get a new receive buffer and other tags, so nothing left of this round can
        reach them. (MPI cannot cancel a send a peer has begun to receive.)"""
        c = self.comm
        if c._inboxes.get(self.kind) is self.inbox:
            del c._inboxes[self.kind]
        c.abandoned.append((self.sends, self.received, self.kept, self.inbox))
