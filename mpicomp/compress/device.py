"""Payloads of device (GPU) vectors: encoded by the GPU kernels, staged through host memory.

For an operator with a `DeviceCodec` (every fixed-size operator but top-k), `encode` runs the
kernels on the device vector and copies the body, with the kernels' status slots, to a reused
host buffer in one transfer, where the header is written: the payload is byte for byte the
CPU's for the same input, key and block scales. `mean_of`, `decode_each` and `decode` take
host payloads (as MPI delivers them), check their headers on the host, upload all bodies in one
transfer and decode (and sum) them on the device; the decoders' status comes back in one small
transfer. A payload this rank encoded in the same exchange (its `Staging`) is decoded from the
body still on the device. Operators without a codec (variable-size coders, top-k, compositions)
are encoded and decoded on the host: their vectors are staged explicitly (`to_host`,
`to_like`).

Per call, then: one device→host copy to encode; one host→device copy and one small
device→host copy (the status) to decode received payloads, none for one's own. Nothing else
crosses the bus.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp, is_gpu_array, runtime_of, to_host, to_like
from .base import (
    DTYPE_CODES,
    HEADER,
    MAGIC,
    DecodeError,
    NonFiniteVector,
    Payload,
    check_dtype,
    raise_non_finite,
)
from .bitpack import check_padding
from .counter_rng import draw_key

STATUS_BYTES = 16  # two int64 slots (`cuda.STATUS_FIELDS`)


def _align(n: int) -> int:
    return -(-n // 8) * 8


class _FixedKey:
    """A generator stand-in whose one draw is ``key``: replays an encode on the host."""

    def __init__(self, key: int):
        self.key = key

    def integers(self, *args, **kwargs):
        return np.uint64(self.key)


class Staging:
    """Reused host (pinned) and device buffers, handed out in order within one exchange.

    `begin` starts an exchange; each `host`/`device` call then returns the next buffer of that
    size, so every payload of one exchange has its own memory and the next exchange reuses it.
    """

    def __init__(self):
        self._pools: dict[tuple, list] = {}
        self._used: dict[tuple, int] = {}
        #: this exchange's encoded payloads: host buffer address → (size, extra, device body)
        self.encoded: dict[int, tuple] = {}

    def begin(self) -> None:
        """Start an exchange: the buffers of the last one are handed out again."""
        self._used.clear()
        self.encoded.clear()

    def device_body(self, buf) -> tuple | None:
        """``(extra, device body)`` of a payload `encode` staged in this exchange, or None (a
        payload that came from elsewhere): decoding one's own message needs no upload."""
        if not isinstance(buf, np.ndarray) or buf.size == 0:
            return None
        found = self.encoded.get(buf.ctypes.data)
        return found[1:] if found is not None and found[0] == buf.size else None

    def _next(self, key: tuple, make):
        pool = self._pools.setdefault(key, [])
        i = self._used.get(key, 0)
        self._used[key] = i + 1
        if i == len(pool):
            pool.append(make())
        return pool[i]

    def host(self, nbytes: int, runtime) -> np.ndarray:
        return self._next(("host", nbytes), lambda: runtime.pinned_empty(nbytes))

    def device(self, nbytes: int, xp):
        return self._next(("device", nbytes), lambda: xp.empty(nbytes, dtype=xp.uint8))


def codec_of(op, like):
    """The op's `DeviceCodec` for vectors like ``like``, or None (encoded on the host): the
    kernels take CuPy arrays; other array API arrays (``array_api_strict``) are staged."""
    if not is_gpu_array(like):
        return None
    from .cuda.codec import codec_for

    return codec_for(op)


def encode(op, x, rng, staging: Staging | None = None) -> Payload:
    """``op.encode(x, rng)`` of a device vector: the same bytes, in a host buffer (from
    ``staging``), ready for MPI. Raises NonFiniteVector / ValueError as `Compressor.encode`."""
    from .cuda import NON_FINITE, NONE, REJECTED

    staging = staging or Staging()
    codec = codec_of(op, x)
    if codec is None:
        return op.encode(to_host(x), rng)
    dtype = check_dtype(x.dtype)
    if op.randomised and rng is None:
        raise ValueError(f"{op.spec()} is randomised: pass rng=np.random.Generator")
    d = int(x.size)
    key = draw_key(rng) if op.randomised else 0
    xp, runtime = get_xp(x), runtime_of(x)
    head = 8 + op.extra_header
    nbytes = op.nbytes_max(d, dtype)
    body_bytes = nbytes - head
    dev = staging.device(_align(body_bytes) + STATUS_BYTES, xp)
    status = dev[_align(body_bytes):].view(xp.int64)
    status[...] = NONE
    extra = codec.encode(op, x, key, codec.scales(op, x), dev[:body_bytes], status)
    host = staging.host(head + _align(body_bytes) + STATUS_BYTES, runtime)
    runtime.copy_to_host(dev, host[head:])
    bad = host[head + _align(body_bytes):].view(np.int64)
    if bad[NON_FINITE] != NONE or bad[REJECTED] != NONE:
        _raise_encode_failure(op, x, key, int(bad[NON_FINITE]), int(bad[REJECTED]))
    host[:head] = np.frombuffer(HEADER.pack(MAGIC, op.code, DTYPE_CODES[dtype], 0, d) + extra,
                                np.uint8)
    staging.encoded[host.ctypes.data] = (nbytes, extra, dev[:body_bytes])
    return Payload(host[:nbytes], op.body_bits(d, dtype))


def _raise_encode_failure(op, x, key: int, non_finite: int, rejected: int):
    """The error the CPU path raises for this input (replayed on a host copy, with the same
    key), or one that names the coordinate the kernels flagged."""
    host = to_host(x)
    if non_finite != np.iinfo(np.int64).max:
        raise_non_finite(host)
        raise NonFiniteVector(f"vector has NaN or Inf at index {non_finite}")
    op.encode(host, _FixedKey(key))  # raises the CPU's ValueError where the CPU rejects it
    raise ValueError(f"{op.spec()}: x[{rejected}] = {host[rejected]:g} cannot be encoded "
                     f"as {x.dtype}")


def _bodies(op, bufs, lengths, dtype, staging: Staging):
    """Per payload ``(extra header bytes, host body or None, device body or None)``: the
    payloads this rank encoded in the current exchange keep their device body; the others'
    headers and sizes are checked on the host."""
    from .base import check_body_size

    out = []
    for buf, d in zip(bufs, lengths):
        own = staging.device_body(buf)
        if own is not None:
            out.append((own[0], None, own[1]))
            continue
        extra, body = op.split(buf, d, dtype)
        try:
            check_body_size(body, op.body_bits(d, dtype))
            check_padding(body, op.body_bits(d, dtype))
        except DecodeError as exc:
            raise op._named(exc) from exc
        out.append((extra, body, None))
    return out


def _decode_all(op, bufs, lengths, dtype, like, staging: Staging, write, senders=None):
    """Decode host payloads on the device: the received bodies go up in one copy (payloads
    this rank encoded are read where they are), ``write(i, extra, body, d, status)`` runs the
    codec for payload ``i``, and the decoders' status comes back in one small copy (none when
    every payload was this rank's own). ``senders`` name the payloads in errors (ranks)."""
    xp, runtime = get_xp(like), runtime_of(like)
    parts = _bodies(op, bufs, lengths, dtype, staging)
    n = len(parts)
    size = sum(_align(body.size) for _, body, _ in parts if body is not None)
    host = staging.host(size, runtime) if size else None
    dev = staging.device(size + STATUS_BYTES * max(n, 1), xp)
    sections, o = [], 0
    for _, body, on_device in parts:
        if body is None:
            sections.append(on_device)
            continue
        host[o : o + body.size] = body
        sections.append(dev[o : o + body.size])
        o += _align(body.size)
    if size:
        runtime.copy_to_device(host, dev[:size])
    status = dev[size:].view(xp.int64)
    status[...] = np.iinfo(np.int64).max
    for i, ((extra, _, _), section, d) in enumerate(zip(parts, sections, lengths)):
        write(i, extra, section, d, status[2 * i : 2 * i + 2])
    if size:
        _check_status(op, status, runtime, staging, n, senders)


def mean_of(op, bufs, d: int, dtype, like, keep: int | None = None,
            staging: Staging | None = None, senders=None):
    """``(mean, kept)`` of host payloads on the device of ``like``: the rank-order float64 sum
    of the decoded messages over their number, in ``dtype``, and the decoded payload number
    ``keep`` (or None). The same values as the host `mean_of`; one upload, one status read."""
    staging = staging or Staging()
    dtype = check_dtype(dtype)
    codec = codec_of(op, like)
    xp = get_xp(like)
    bufs = list(bufs)
    if codec is None:
        from ..comm.aggregate import mean_of as host_mean_of

        mean, kept = host_mean_of(op, bufs, d, dtype, keep=keep)
        return to_like(mean, like), (None if kept is None else to_like(kept, like))
    acc = xp.zeros(d, dtype=xp.float64)
    kept = []

    def write(i, extra, body, length, slots):
        if i == keep:
            kept.append(xp.empty(length, dtype=dtype))
            codec.decode(op, extra, body, length, dtype, kept[0], False, slots)
            acc[...] += kept[0].astype(xp.float64)
        else:
            codec.decode(op, extra, body, length, dtype, acc, True, slots)

    _decode_all(op, bufs, [d] * len(bufs), dtype, like, staging, write, senders)
    return (acc / max(len(bufs), 1)).astype(dtype), (kept[0] if kept else None)


def decode_each(op, bufs, lengths, dtype, like, staging: Staging | None = None, out=None):
    """``[op.decode(buf, d, dtype) for buf, d in zip(bufs, lengths)]`` on the device of
    ``like``, with one upload and one status read; with ``out`` (a device vector of
    ``sum(lengths)`` values) the decoded vectors are written one after the other into it, and
    ``out`` is returned instead of the list."""
    staging = staging or Staging()
    dtype = check_dtype(dtype)
    codec = codec_of(op, like)
    bufs, lengths = list(bufs), [int(n) for n in lengths]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    if codec is None:  # decoded on the host, each vector uploaded
        values = [to_like(op.decode(buf, n, dtype), like) for buf, n in zip(bufs, lengths)]
        if out is None:
            return values
        for i, v in enumerate(values):
            out[starts[i] : starts[i + 1]] = v
        return out
    whole = out if out is not None else get_xp(like).empty(int(starts[-1]), dtype=dtype)
    values = [whole[starts[i] : starts[i + 1]] for i in range(len(bufs))]

    def write(i, extra, body, length, slots):
        codec.decode(op, extra, body, length, dtype, values[i], False, slots)

    _decode_all(op, bufs, lengths, dtype, like, staging, write)
    return whole if out is not None else values


def decode(op, buf, d: int, dtype, like, staging: Staging | None = None):
    """``op.decode(buf, d, dtype)`` of a host payload, on the device of ``like``. A payload
    this rank encoded in the current exchange (``staging``) is decoded from the body still on
    the device: no copy at all."""
    return decode_each(op, [buf], [d], dtype, like, staging)[0]


def _check_status(op, status, runtime, staging: Staging, n: int, senders=None) -> None:
    """Read the decoders' status back (one copy); a DecodeError naming the first corrupted
    payload (its sender, when ``senders`` are given) and coordinate."""
    host = staging.host(STATUS_BYTES * max(n, 1), runtime)
    runtime.copy_to_host(status, host)
    slots = host.view(np.int64).reshape(-1, 2)
    for i, (_, rejected) in enumerate(slots[:n]):
        if rejected != np.iinfo(np.int64).max:
            who = f"the payload of rank {senders[i]}" if senders is not None else f"payload {i}"
            raise DecodeError(f"{op.spec()}: {who} is corrupted at coordinate {rejected} "
                              "(decoded on the GPU)")
