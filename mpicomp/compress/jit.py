"""Optional Numba compilation and the building blocks of every compiled kernel and coder.

`njit` compiles a function when Numba is installed and leaves it plain Python otherwise
(correct, slow); compiled means ahead of time where ``python -m mpicomp.compile`` has built the
kernels, else by Numba on first use (`aot`: such a process never imports Numba). The blocks:
counter-based random words (`counter_rng`'s SplitMix64) and bit packing of fixed-width fields
one chunk at a time (`bitpack`'s layout), used by `numba_kernels` and `coding`.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from . import aot

#: Numba is installed (found, not imported: `aot` imports it only when a kernel needs the JIT)
HAVE_NUMBA = importlib.util.find_spec("numba") is not None
#: in kernels: ``numba`` and ``prange`` stand-ins, bound to Numba's when the JIT takes over
numba = aot.numba_stand_in if HAVE_NUMBA else None
prange = range


def njit(fn=None, **options):
    """``numba.njit(cache=True, nogil=True, **options)`` when Numba is installed (a lazy
    `aot.Kernel`), else ``fn`` itself; ``@njit`` or ``@njit(parallel=True)``."""
    if fn is None:
        return lambda f: njit(f, **options)
    if HAVE_NUMBA:
        return aot.kernel(fn, {"cache": True, "nogil": True, **options})
    return fn


def njit_fast(fn=None, **options):
    """Like `njit`, allowing reassociation (for reductions whose order does not matter)."""
    return njit(fn, fastmath={"reassoc", "nsz"}, **options)


U1 = np.uint64(1)
GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


@njit
def splitmix(key, counter):
    """SplitMix64 output for one counter (see `counter_rng.splitmix64`)."""
    z = (np.uint64(counter) + U1) * GAMMA + key
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


CHUNK = 2048  # fields per chunk: 2048·w bits is a whole number of 32-bit words for any w


# --- random words and field packing, one chunk at a time -------------------------------------
@njit
def chunk_words(key, start, n, words64):
    """Random words of coordinates start … start+n−1 (start even), as a uint32 view."""
    base = start >> 1
    for m in range((n + 1) >> 1):
        words64[m] = splitmix(key, base + m)
    return words64.view(np.uint32)


@njit(inline="always")
def _put_field(lo, hi, f, sh, w):
    """Field ``f`` at bit ``sh`` of the 128-bit word hi:lo (``sh``, ``w`` literals)."""
    if sh < 64:
        lo |= f << np.uint64(sh)
        if sh + w > 64:
            hi |= f >> np.uint64(64 - sh)
    else:
        hi |= f << np.uint64(sh - 64)
    return lo, hi


@njit(inline="always")
def _get_field(lo, hi, sh, w):
    """The ``w``-bit field at bit ``sh`` of the 128-bit word hi:lo, unmasked above w."""
    if sh + w <= 64:
        return lo >> np.uint64(sh)
    elif sh >= 64:
        return hi >> np.uint64(sh - 64)
    return (lo >> np.uint64(sh)) | (hi << np.uint64(64 - sh))


@njit(inline="always")
def _pack_groups(fields, groups, w, out, pos):
    """Groups of 8 fields (w ≤ 16 bits each) = w bytes each, from ``out[pos]``. Inlined with a
    literal ``w`` so that LLVM sees constant shifts and byte counts (straight-line code)."""
    for g in range(groups):
        f0 = np.uint64(fields[8 * g])
        f1 = np.uint64(fields[8 * g + 1])
        f2 = np.uint64(fields[8 * g + 2])
        f3 = np.uint64(fields[8 * g + 3])
        f4 = np.uint64(fields[8 * g + 4])
        f5 = np.uint64(fields[8 * g + 5])
        f6 = np.uint64(fields[8 * g + 6])
        f7 = np.uint64(fields[8 * g + 7])
        base = pos + g * w
        if w <= 8:  # all 8 fields in one 64-bit word
            v = (f0 | (f1 << np.uint64(w)) | (f2 << np.uint64(2 * w)) | (f3 << np.uint64(3 * w))
                 | (f4 << np.uint64(4 * w)) | (f5 << np.uint64(5 * w))
                 | (f6 << np.uint64(6 * w)) | (f7 << np.uint64(7 * w)))
            for b in range(w):
                out[base + b] = np.uint8((v >> np.uint64(8 * b)) & np.uint64(0xFF))
        else:  # fields 0…3 in the low word (4w ≤ 64), 4…7 in either or split
            lo = f0 | (f1 << np.uint64(w)) | (f2 << np.uint64(2 * w)) | (f3 << np.uint64(3 * w))
            hi = np.uint64(0)
            lo, hi = _put_field(lo, hi, f4, 4 * w, w)
            lo, hi = _put_field(lo, hi, f5, 5 * w, w)
            lo, hi = _put_field(lo, hi, f6, 6 * w, w)
            lo, hi = _put_field(lo, hi, f7, 7 * w, w)
            for b in range(8):
                out[base + b] = np.uint8((lo >> np.uint64(8 * b)) & np.uint64(0xFF))
            for b in range(8, w):
                out[base + b] = np.uint8((hi >> np.uint64(8 * (b - 8))) & np.uint64(0xFF))


@njit(inline="always")
def _unpack_groups(buf, pos, groups, w, fields):
    """Inverse of `_pack_groups`: ``groups`` groups of 8 fields of w ≤ 16 bits."""
    mask = (np.uint64(1) << np.uint64(w)) - U1
    for g in range(groups):
        base = pos + g * w
        lo = np.uint64(0)
        hi = np.uint64(0)
        for b in range(min(8, w)):
            lo |= np.uint64(buf[base + b]) << np.uint64(8 * b)
        for b in range(8, w):
            hi |= np.uint64(buf[base + b]) << np.uint64(8 * (b - 8))
        o = 8 * g
        fields[o] = np.uint32(lo & mask)
        fields[o + 1] = np.uint32(_get_field(lo, hi, w, w) & mask)
        fields[o + 2] = np.uint32(_get_field(lo, hi, 2 * w, w) & mask)
        fields[o + 3] = np.uint32(_get_field(lo, hi, 3 * w, w) & mask)
        fields[o + 4] = np.uint32(_get_field(lo, hi, 4 * w, w) & mask)
        fields[o + 5] = np.uint32(_get_field(lo, hi, 5 * w, w) & mask)
        fields[o + 6] = np.uint32(_get_field(lo, hi, 6 * w, w) & mask)
        fields[o + 7] = np.uint32(_get_field(lo, hi, 7 * w, w) & mask)


@njit
def _pack_dispatch(fields, groups, width, out, pos):
    """`_pack_groups` with ``width`` (1 … 16) as a literal."""
    if width == 1:
        _pack_groups(fields, groups, 1, out, pos)
    elif width == 2:
        _pack_groups(fields, groups, 2, out, pos)
    elif width == 3:
        _pack_groups(fields, groups, 3, out, pos)
    elif width == 4:
        _pack_groups(fields, groups, 4, out, pos)
    elif width == 5:
        _pack_groups(fields, groups, 5, out, pos)
    elif width == 6:
        _pack_groups(fields, groups, 6, out, pos)
    elif width == 7:
        _pack_groups(fields, groups, 7, out, pos)
    elif width == 8:
        _pack_groups(fields, groups, 8, out, pos)
    elif width == 9:
        _pack_groups(fields, groups, 9, out, pos)
    elif width == 10:
        _pack_groups(fields, groups, 10, out, pos)
    elif width == 11:
        _pack_groups(fields, groups, 11, out, pos)
    elif width == 12:
        _pack_groups(fields, groups, 12, out, pos)
    elif width == 13:
        _pack_groups(fields, groups, 13, out, pos)
    elif width == 14:
        _pack_groups(fields, groups, 14, out, pos)
    elif width == 15:
        _pack_groups(fields, groups, 15, out, pos)
    else:
        _pack_groups(fields, groups, 16, out, pos)


@njit
def _unpack_dispatch(buf, pos, groups, width, fields):
    """`_unpack_groups` with ``width`` (1 … 16) as a literal."""
    if width == 1:
        _unpack_groups(buf, pos, groups, 1, fields)
    elif width == 2:
        _unpack_groups(buf, pos, groups, 2, fields)
    elif width == 3:
        _unpack_groups(buf, pos, groups, 3, fields)
    elif width == 4:
        _unpack_groups(buf, pos, groups, 4, fields)
    elif width == 5:
        _unpack_groups(buf, pos, groups, 5, fields)
    elif width == 6:
        _unpack_groups(buf, pos, groups, 6, fields)
    elif width == 7:
        _unpack_groups(buf, pos, groups, 7, fields)
    elif width == 8:
        _unpack_groups(buf, pos, groups, 8, fields)
    elif width == 9:
        _unpack_groups(buf, pos, groups, 9, fields)
    elif width == 10:
        _unpack_groups(buf, pos, groups, 10, fields)
    elif width == 11:
        _unpack_groups(buf, pos, groups, 11, fields)
    elif width == 12:
        _unpack_groups(buf, pos, groups, 12, fields)
    elif width == 13:
        _unpack_groups(buf, pos, groups, 13, fields)
    elif width == 14:
        _unpack_groups(buf, pos, groups, 14, fields)
    elif width == 15:
        _unpack_groups(buf, pos, groups, 15, fields)
    else:
        _unpack_groups(buf, pos, groups, 16, fields)


@njit
def pack_chunk(fields, n, width, out, bit0):
    """Pack n fields of ``width`` bits at stream bit ``bit0`` (a multiple of 8) of ``out``."""
    pos = bit0 >> 3
    start = 0
    if width <= 16:  # 8 fields of w bits are exactly w bytes: pack them branch-free
        groups = n >> 3
        _pack_dispatch(fields, groups, width, out, pos)
        start = groups * 8
        pos += groups * width
    acc = np.uint64(0)
    nacc = 0
    for i in range(start, n):
        acc |= np.uint64(fields[i]) << np.uint64(nacc)
        nacc += width
        if nacc >= 32:
            out[pos] = np.uint8(acc & np.uint64(0xFF))
            out[pos + 1] = np.uint8((acc >> np.uint64(8)) & np.uint64(0xFF))
            out[pos + 2] = np.uint8((acc >> np.uint64(16)) & np.uint64(0xFF))
            out[pos + 3] = np.uint8((acc >> np.uint64(24)) & np.uint64(0xFF))
            pos += 4
            acc >>= np.uint64(32)
            nacc -= 32
    while nacc > 0:
        out[pos] = np.uint8(acc & np.uint64(0xFF))
        acc >>= np.uint64(8)
        nacc -= 8
        pos += 1


@njit
def unpack_chunk(buf, bit0, n, width, fields):
    """Read n fields of ``width`` bits starting at stream bit ``bit0`` (a multiple of 8)."""
    pos = bit0 >> 3
    mask = (np.uint64(1) << np.uint64(width)) - U1
    start = 0
    if width <= 16:  # whole groups of 8 fields = w bytes
        groups = n >> 3
        _unpack_dispatch(buf, pos, groups, width, fields)
        start = groups * 8
        pos += groups * width
    acc = np.uint64(0)
    nacc = 0
    for i in range(start, n):
        while nacc < width:
            acc |= np.uint64(buf[pos]) << np.uint64(nacc)
            pos += 1
            nacc += 8
        fields[i] = np.uint32(acc & mask)
        acc >>= np.uint64(width)
        nacc -= width


@njit
def pack_uint(fields, width, out):
    """`bitpack.pack_fields` compiled: all of ``fields`` (uint32) at bit 0 of ``out``."""
    pack_chunk(fields, fields.size, width, out, 0)


@njit
def unpack_uint(buf, width, fields):
    """`bitpack.unpack_fields` compiled: ``fields.size`` fields from bit 0 of ``buf``."""
    unpack_chunk(buf, 0, fields.size, width, fields)
