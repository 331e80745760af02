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

import time
from collections.abc import Sequence

import numpy as np

from .agreement import FAILED, NON_FINITE, STOP, NonFiniteInput, raise_agreed

TRAILER = np.dtype([("flags", "<u4"), ("nbytes", "<u4")])


class PayloadSizeError(ValueError):
    """A rank's message does not have the size the collective requires (raised on every rank)."""


class FusedCollectives:
    """Control bits and the fixed-size collectives that carry them (see the module notes)."""

    stop_requested: bool  # set by the owner: sent in the control bits of each exchange
    stop_agreed: bool  # some rank asked to stop, as learnt from an exchange

    # -- control bits ----------------------------------------------------------------------
    def control(self, flags: int = 0) -> int:
        """``flags`` with `STOP` added when this rank was asked to stop."""
        return int(flags) | (STOP if self.stop_requested else 0)

    def agree(self, flags) -> int:
        """The OR of every rank's control bits: notes a stop request (`stop_agreed`) and raises
        NonFiniteInput (every rank sees the same bits, so every rank raises)."""
        agreed = int(np.bitwise_or.reduce(np.asarray(flags, dtype=np.int64).ravel(), initial=0))
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
        out = np.empty(int(nbytes) + TRAILER.itemsize, dtype=np.uint8)
        real = int(nbytes) if buf is None else buf.size
        used = 0 if buf is None else min(real, int(nbytes))
        out[:used] = buf[:used] if used else out[:0]
        out[used:nbytes] = 0
        out[nbytes:].view(TRAILER)[0] = (flags, real)
        return out

    @staticmethod
    def _unframe(recv: np.ndarray, counts: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
        """``(payload views, flags, claimed sizes)`` of framed messages laid end to end."""
        t = TRAILER.itemsize
        if (counts == counts[0]).all():  # the common case: one size, rows of one array
            frames = recv.reshape(counts.size, int(counts[0]) + t)
            words = np.ascontiguousarray(frames[:, -t:]).view("<u4")
            return frames[:, :-t], words[:, 0], words[:, 1]
        ends = np.cumsum(counts + t)
        starts = ends - counts - t
        words = recv[(ends - t)[:, None] + np.arange(t)].view("<u4").astype(np.int64)
        return ([recv[s : s + c] for s, c in zip(starts.tolist(), counts.tolist())],
                words[:, 0], words[:, 1])

    def _counts(self, counts) -> np.ndarray:
        if isinstance(counts, (int, np.integer)):
            return np.full(self.size, counts, dtype=np.int64)
        return np.asarray(counts, dtype=np.int64)

    # -- collectives ----------------------------------------------------------------------
    def allgather_fixed(self, buf, counts, flags: int = 0, failure: str | None = None) -> list:
        """Every rank's buffer on every rank when every size is known in advance (``counts``:
        one for all ranks or one per rank): one ``Allgather`` (``Allgatherv`` for unequal
        sizes) of the buffers with their control trailers, no sizes exchanged.

        ``buf`` None sends zeros (a rank whose vector is not finite says so in ``flags``, one
        that failed in ``failure``). Raises on every rank: NonFiniteInput, the failures
        (`settle`), PayloadSizeError for a buffer that is not of its size.
        """
        t0 = time.perf_counter()
        counts = self._counts(counts)
        flags |= FAILED if failure else 0
        send = self._frame(None if buf is None else self._bytes(buf), counts[self.rank],
                           self.control(flags))
        framed = counts + TRAILER.itemsize
        recv = np.empty(int(framed.sum()), dtype=np.uint8)
        if (framed == framed[0]).all():
            self.mpi_comm.Allgather([send, self.MPI.BYTE], [recv, self.MPI.BYTE])
        else:
            displs = np.cumsum(framed) - framed
            self.mpi_comm.Allgatherv([send, self.MPI.BYTE], [recv, framed, displs, self.MPI.BYTE])
        bufs, got_flags, sizes = self._unframe(recv, counts)
        self.settle(self.agree(got_flags), failure)
        self.check_sizes(sizes, counts, "allgatherv")
        mine = int(counts[self.rank])
        self._record("allgatherv", t0, mine * (self.size - 1), int(counts.sum()) - mine,
                     self._model("allgather", self.size, int(counts.max())))
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
        counts = self._counts(counts)
        mine = self.control(flags)
        send = self._frame(None if buf is None else self._bytes(buf), counts[self.rank], mine)
        is_root = self.rank == root
        framed = counts + TRAILER.itemsize
        recv = np.empty(int(framed.sum()), dtype=np.uint8) if is_root else None
        spec = [recv, framed, np.cumsum(framed) - framed, self.MPI.BYTE] if is_root else None
        self.mpi_comm.Gatherv([send, self.MPI.BYTE], spec, root=root)
        sent = 0 if is_root else int(counts[self.rank])
        received = int(counts.sum() - counts[root]) if is_root else 0
        self._record("gatherv", t0, sent, received,
                     self._model("gather", self.size, int(counts.max())))
        if not is_root:
            return None, mine, None
        bufs, got_flags, sizes = self._unframe(recv, counts)
        bits = int(np.bitwise_or.reduce(got_flags))
        try:
            if not bits & NON_FINITE:
                self.check_sizes(sizes, counts, "gatherv")
        except PayloadSizeError as exc:
            return bufs, bits, f"{type(exc).__name__}: {exc}"
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
                      else np.empty(m + TRAILER.itemsize, dtype=np.uint8))
            self.mpi_comm.Bcast([framed, self.MPI.BYTE], root=root)
            (out,), got, _ = self._unframe(framed, np.array([m]))
            bits = int(got[0])
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
        send_counts, recv_counts = self._counts(send_counts), self._counts(recv_counts)
        mine = self.control(flags)
        send = np.concatenate([self._frame(None if b is None else self._bytes(b), n, mine)
                               for b, n in zip(bufs, send_counts)])
        sent, got = send_counts + TRAILER.itemsize, recv_counts + TRAILER.itemsize
        recv = np.empty(int(got.sum()), dtype=np.uint8)
        self.mpi_comm.Alltoallv([send, sent, np.cumsum(sent) - sent, self.MPI.BYTE],
                            [recv, got, np.cumsum(got) - got, self.MPI.BYTE])
        me = self.rank
        biggest = max(int(send_counts.max(initial=0)), int(recv_counts.max(initial=0)))
        self._record("alltoallv", t0, int(send_counts.sum() - send_counts[me]),
                     int(recv_counts.sum() - recv_counts[me]),
                     self._model("alltoall", self.size, biggest))
        received, got_flags, sizes = self._unframe(recv, recv_counts)
        return received, int(np.bitwise_or.reduce(got_flags)), sizes
