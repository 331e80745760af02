"""The fused collectives of the step path: control bits travel inside the data's collective.

When every rank knows every message size in advance (fixed-size operators), no sizes are
exchanged, and each message ends with an 8-byte control trailer (``uint32`` flags of
`mpicomp.comm.agreement`: a stop request, NaN/Inf in the sender's vector, a failure; ``uint32``
the payload's real size, so a wrong-size payload is caught) inside the collective that moves the
data. A step that goes well thus costs its data collectives only; the failures' texts are
exchanged only on the error path (`FusedCollectives.settle`). The trailer is transport, not
payload: the traffic counters count the payload bytes alone.

`FusedCollectives` is a part of `mpicomp.comm.communicator.Communicator`: it uses the
communicator's ``mpi_comm``, ``rank``, ``size``, counters (``_record``, ``_model``) and
``_bytes``.
"""

from __future__ import annotations

import functools
import operator
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .agreement import FAILED, NON_FINITE, STOP, NonFiniteInput, failure_text, raise_agreed

#: the control trailer of every framed message: uint32 control bits, uint32 payload size
TRAILER = struct.Struct("<II")


@dataclass(frozen=True)
class Layout:
    """Where framed messages of known sizes lie, end to end, in one buffer."""

    counts: np.ndarray  # payload bytes of each message
    framed: np.ndarray  # payload and trailer bytes of each message
    displs: np.ndarray  # where each framed message starts
    sizes: tuple  # the payload sizes, as Python ints
    total: int  # bytes of all framed messages
    equal: bool  # one size for all

    @classmethod
    def of(cls, sizes) -> Layout:
        counts = np.asarray(sizes, dtype=np.int64)
        framed = counts + TRAILER.size
        return cls(counts, framed, np.cumsum(framed) - framed, tuple(int(c) for c in counts),
                   int(framed.sum()), bool((counts == counts[0]).all()))

    @property
    def payload(self) -> int:
        """The payload bytes of all messages."""
        return sum(self.sizes)

    @property
    def biggest(self) -> int:
        return max(self.sizes, default=0)

    def unframe(self, recv: np.ndarray) -> tuple:
        """``(payload views, flags, claimed sizes)`` of the framed messages in ``recv`` (the
        flags and sizes as tuples of ints)."""
        t, n = TRAILER.size, len(self.sizes)
        if self.equal:  # the common case: one size, rows of one array
            frames = recv.reshape(n, self.sizes[0] + t)
            views, tails = frames[:, :-t], frames[:, -t:].tobytes()
        else:
            ends = [int(d) + c for d, c in zip(self.displs, self.sizes)]
            views = [recv[e - c : e] for e, c in zip(ends, self.sizes)]
            tails = b"".join(recv[e : e + t].tobytes() for e in ends)
        pairs = list(TRAILER.iter_unpack(tails))
        return views, tuple(f for f, _ in pairs), tuple(size for _, size in pairs)


def either(bits) -> int:
    """The OR of control bits."""
    return functools.reduce(operator.or_, bits, 0)


class PayloadSizeError(ValueError):
    """A rank's message does not have the size the collective requires (raised on every rank)."""


class FusedCollectives:
    """Control bits and the fixed-size collectives that carry them (see the module notes)."""

    stop_requested: bool  # set by the owner: sent in the control bits of each exchange
    stop_agreed: bool  # some rank asked to stop, as learnt from an exchange
    _layouts: dict  # the `Layout` of each message sizes seen (`_layout`)

    # -- control bits ----------------------------------------------------------------------
    def control(self, flags: int = 0) -> int:
        """``flags`` with `STOP` added when this rank was asked to stop."""
        return int(flags) | (STOP if self.stop_requested else 0)

    def agree(self, flags) -> int:
        """The OR of every rank's control bits: notes a stop request (`stop_agreed`) and raises
        NonFiniteInput (every rank sees the same bits, so every rank raises)."""
        if isinstance(flags, (int, np.integer)):
            agreed = int(flags)
        else:
            agreed = either(int(f) for f in np.ravel(flags))
        if agreed & STOP:
            self.stop_agreed = True
        if agreed & NON_FINITE:
            raise NonFiniteInput("a rank's vector has NaN or Inf")
        return agreed

    def agree_flags(self, flags: int = 0, nbytes: int | None = None):
        """`agree` over one small ``Allreduce`` (BOR) of this rank's control bits: for steps
        whose data moves between neighbours only (gossip), where no collective reaches all.

        With ``nbytes`` every rank's message size travels in the same ``Allreduce`` (each rank
        fills its own slot) and ``(bits, sizes by rank)`` is returned; else the bits."""
        words = np.zeros(1 if nbytes is None else 1 + self.size, np.int64)
        words[0] = self.control(flags)
        if nbytes is not None:
            words[1 + self.rank] = nbytes
        total = np.empty_like(words)
        self.mpi_comm.Allreduce(words, total, op=self.MPI.BOR)
        bits = self.agree(total[0])
        return bits if nbytes is None else (bits, total[1:])

    def settle(self, agreed: int, failure: str | None) -> None:
        """On the error path only (`FAILED` among ``agreed``): exchange the failures' texts and
        raise on every rank (`raise_agreed`; a PayloadSizeError stays one)."""
        if agreed & FAILED:
            raise_agreed(self, failure, kinds={"PayloadSizeError": PayloadSizeError})

    def _frame(self, buf, nbytes: int, flags: int) -> np.ndarray:
        """``buf`` cut or zero-padded to ``nbytes``, then the control trailer (``flags`` and
        ``buf``'s real size; None sends zeros and claims ``nbytes``)."""
        out = np.empty(nbytes + TRAILER.size, dtype=np.uint8)
        real = nbytes if buf is None else buf.size
        used = 0 if buf is None else min(real, nbytes)
        if used:
            out[:used] = buf[:used]
        if used < nbytes:
            out[used:nbytes] = 0
        TRAILER.pack_into(out, nbytes, flags, real)
        return out

    def _layout(self, counts) -> Layout:
        """The `Layout` of messages of ``counts`` bytes (one size for all ranks or one per
        rank), made once per distinct ``counts`` and kept."""
        one = isinstance(counts, (int, np.integer))
        key = int(counts) if one else tuple(int(c) for c in counts)
        if key not in self._layouts:
            self._layouts[key] = Layout.of([key] * self.size if one else key)
        return self._layouts[key]

    def _check(self, sizes: tuple, layout: Layout, what: str) -> None:
        """PayloadSizeError unless every claimed size is the expected one."""
        if sizes != layout.sizes:
            self.check_sizes(np.array(sizes, dtype=np.int64), layout.counts, what)

    # -- collectives ----------------------------------------------------------------------
    def allgather_fixed(self, buf, counts, flags: int = 0, failure: str | None = None):
        """Every rank's buffer on every rank when every size is known in advance (``counts``:
        one for all ranks or one per rank): one ``Allgather`` (``Allgatherv`` for unequal
        sizes) of the buffers with their control trailers, no sizes exchanged.

        ``buf`` None sends zeros (a rank whose vector is not finite says so in ``flags``, one
        that failed in ``failure``). Raises on every rank: NonFiniteInput, the failures
        (`settle`), PayloadSizeError for a buffer that is not of its size.
        """
        t0 = time.perf_counter()
        layout = self._layout(counts)
        flags |= FAILED if failure else 0
        mine = layout.sizes[self.rank]
        send = self._frame(None if buf is None else self._bytes(buf), mine, self.control(flags))
        recv = np.empty(layout.total, dtype=np.uint8)
        if layout.equal:
            self.mpi_comm.Allgather([send, self.MPI.BYTE], [recv, self.MPI.BYTE])
        else:
            self.mpi_comm.Allgatherv([send, self.MPI.BYTE],
                                     [recv, layout.framed, layout.displs, self.MPI.BYTE])
        bufs, got_flags, sizes = layout.unframe(recv)
        self.settle(self.agree(either(got_flags)), failure)
        self._check(sizes, layout, "allgatherv")
        self._record("allgatherv", t0, mine * (self.size - 1), layout.payload - mine,
                     self._model("allgather", self.size, layout.biggest))
        return bufs

    def gather_fixed(self, buf, root: int, counts, flags: int = 0):
        """All buffers on ``root`` when every size is known in advance: one ``Gatherv`` with
        the control trailers, no sizes exchanged.

        Returns ``(buffers, bits, failure)``: on ``root`` the buffers, the OR of every rank's
        control bits and the text of a PayloadSizeError (None when every size is right); on the
        other ranks ``(None, own bits, None)``. Nothing is raised: the root hands ``bits`` and
        ``failure`` to the `bcast_fixed` that follows, which settles them on every rank.
        """
        t0 = time.perf_counter()
        layout = self._layout(counts)
        mine = self.control(flags)
        size = layout.sizes[self.rank]
        send = self._frame(None if buf is None else self._bytes(buf), size, mine)
        is_root = self.rank == root
        recv = np.empty(layout.total, dtype=np.uint8) if is_root else None
        spec = [recv, layout.framed, layout.displs, self.MPI.BYTE] if is_root else None
        self.mpi_comm.Gatherv([send, self.MPI.BYTE], spec, root=root)
        received = layout.payload - layout.sizes[root] if is_root else 0
        self._record("gatherv", t0, 0 if is_root else size, received,
                     self._model("gather", self.size, layout.biggest))
        if not is_root:
            return None, mine, None
        bufs, got_flags, sizes = layout.unframe(recv)
        bits = either(got_flags)
        try:
            if not bits & NON_FINITE:
                self._check(sizes, layout, "gatherv")
        except PayloadSizeError as exc:
            return bufs, bits, failure_text(exc)
        return bufs, bits, None

    def bcast_fixed(self, buf, root: int, nbytes: int | None, flags: int = 0,
                    failure: str | None = None) -> np.ndarray:
        """``root``'s buffer on every rank with the root's control bits: one ``Bcast`` when
        ``nbytes`` is known on every rank, else a ``Bcast`` of the size and bits first.

        The root passes the bits it gathered (`gather_fixed`) and its failure, if any; every
        rank then agrees on them (NonFiniteInput, `settle`) before the buffer is returned.
        """
        t0 = time.perf_counter()
        is_root = self.rank == root
        if is_root:
            flags = self.control(flags | (FAILED if failure else 0))
            buf = None if buf is None or flags & (FAILED | NON_FINITE) else self._bytes(buf)
        if nbytes is None:
            head = np.array([0 if not is_root or buf is None else buf.size, flags], np.int64)
            self.mpi_comm.Bcast([head, self.MPI.INT64_T], root=root)
            m, bits = int(head[0]), int(head[1])
            out = buf if is_root and buf is not None else np.empty(m, dtype=np.uint8)
            if self.size > 1 and m:
                self.mpi_comm.Bcast([out, self.MPI.BYTE], root=root)
        else:
            m = int(nbytes)
            framed = (self._frame(buf, m, flags) if is_root
                      else np.empty(m + TRAILER.size, dtype=np.uint8))
            self.mpi_comm.Bcast([framed, self.MPI.BYTE], root=root)
            out = framed[:m]
            bits = TRAILER.unpack_from(framed, m)[0]
        self.settle(self.agree(bits), failure if is_root else None)
        self._record("bcast", t0, m * (self.size - 1) if is_root else 0, 0 if is_root else m,
                     self._model("bcast", self.size, m))
        return out

    def alltoall_fixed(self, bufs: Sequence, send_counts, recv_counts, flags: int = 0):
        """Personalised exchange when every size is known in advance: ``bufs[q]`` (padded or
        cut to ``send_counts[q]``; None: zeros) goes to rank q with the control trailer; one
        ``Alltoallv``, no sizes exchanged.

        Returns ``(received buffers, OR of the senders' bits, the sizes they claim)``; nothing
        is raised: the caller checks the sizes and the collective that follows settles the bits
        and any failure.
        """
        t0 = time.perf_counter()
        sending, receiving = self._layout(send_counts), self._layout(recv_counts)
        mine = self.control(flags)
        send = np.concatenate([self._frame(None if b is None else self._bytes(b), n, mine)
                               for b, n in zip(bufs, sending.sizes)])
        recv = np.empty(receiving.total, dtype=np.uint8)
        self.mpi_comm.Alltoallv([send, sending.framed, sending.displs, self.MPI.BYTE],
                                [recv, receiving.framed, receiving.displs, self.MPI.BYTE])
        me = self.rank
        self._record("alltoallv", t0, sending.payload - sending.sizes[me],
                     receiving.payload - receiving.sizes[me],
                     self._model("alltoall", self.size, max(sending.biggest, receiving.biggest)))
        received, got_flags, sizes = receiving.unframe(recv)
        return received, either(got_flags), sizes
