"""Packing fixed-width unsigned fields into bytes, flat, ``bitorder="little"``.

Field ``i`` of width ``w`` occupies stream bits ``[i·w, (i+1)·w)``, least significant bit first;
stream bit ``p`` is bit ``p % 8`` of byte ``p // 8``. Padding bits of the last byte are zero.
`numpy_kernels.pack_fields` is the reference; the compiled kernels fuse the same layout into
the operators' passes.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .base import DecodeError


def packed_nbytes(n: int, width: int) -> int:
    """Bytes that hold ``n`` fields of ``width`` bits."""
    return -(-n * width // 8)


def pack_fields(values: np.ndarray, width: int) -> np.ndarray:
    """Pack unsigned integers (each ``< 2**width``) into a ``uint8`` array."""
    if not 1 <= width <= 32:
        raise ValueError(f"field width {width} not in 1..32")
    return kernels.backend().pack_fields(np.asarray(values), width)


def unpack_fields(buf: np.ndarray, width: int, n: int) -> np.ndarray:
    """Inverse of `pack_fields`: ``n`` fields as ``uint32`` (``uint8`` for width ≤ 8)."""
    need = packed_nbytes(n, width)
    if buf.size < need:
        raise DecodeError(f"bit-packed field area truncated: {buf.size} bytes, need {need}")
    return kernels.backend().unpack_fields(buf[:need], width, n)


def check_padding(buf: np.ndarray, nbits: int) -> None:
    """Raise DecodeError if the padding bits after ``nbits`` in the last byte are not zero."""
    if nbits % 8 and buf.size * 8 >= nbits:
        last = int(buf[nbits // 8])
        if last >> (nbits % 8):
            raise DecodeError("non-zero padding bits after the last field: corrupted buffer")


def field_width(levels: int) -> int:
    """Bits to hold the integers ``0 … levels`` (``⌈log₂(levels + 1)⌉``, at least 1)."""
    return max(1, int(levels).bit_length())


def append_bits(head: np.ndarray, head_bits: int, tail: np.ndarray, tail_bits: int) -> np.ndarray:
    """The bit stream ``head[:head_bits] ‖ tail[:tail_bits]`` as bytes (no padding in between)."""
    shift = head_bits % 8
    out = np.zeros(-(-(head_bits + tail_bits) // 8), dtype=np.uint8)
    out[: -(-head_bits // 8)] = head[: -(-head_bits // 8)]
    base = head_bits // 8
    tail = tail[: -(-tail_bits // 8)]
    if shift == 0:
        out[base : base + tail.size] = tail
        return out
    wide = tail.astype(np.uint16) << shift
    out[base : base + tail.size] |= (wide & 0xFF).astype(np.uint8)
    hi = (wide >> 8).astype(np.uint8)
    room = out.size - (base + 1)
    out[base + 1 : base + 1 + min(room, hi.size)] |= hi[:room]
    return out


def bits_from(buf: np.ndarray, offset: int) -> np.ndarray:
    """The stream from bit ``offset`` on, re-aligned to start at bit 0 of byte 0."""
    base, shift = divmod(offset, 8)
    rest = buf[base:]
    if shift == 0:
        return rest.copy()
    nxt = np.zeros(rest.size, dtype=np.uint8)
    nxt[:-1] = rest[1:]
    return ((rest >> shift) | (nxt << (8 - shift))).astype(np.uint8)
