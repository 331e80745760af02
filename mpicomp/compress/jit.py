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


@njit
def pack_chunk(fields, n, width, out, bit0):
    """Pack n fields of ``width`` bits at stream bit ``bit0`` (a multiple of 8) of ``out``."""
    pos = bit0 >> 3
    if width == 1 or width == 2 or width == 4 or width == 8:
        per = 8 // width
        full = n // per
        rows = fields[: full * per].reshape(full, per)
        for i in range(full):
            byte = np.uint32(0)
            for k in range(per):
                byte |= rows[i, k] << np.uint32(k * width)
            out[pos + i] = np.uint8(byte)
        if n > full * per:
            byte = np.uint32(0)
            for j in range(full * per, n):
                byte |= fields[j] << np.uint32((j - full * per) * width)
            out[pos + full] = np.uint8(byte)
        return
    start = 0
    if width <= 16:  # 8 fields of w bits are exactly w bytes: pack them branch-free
        groups = n >> 3
        for g in range(groups):
            lo = np.uint64(0)
            hi = np.uint64(0)
            for k in range(8):
                f = np.uint64(fields[8 * g + k])
                sh = k * width
                if sh < 64:
                    lo |= f << np.uint64(sh)
                    if sh + width > 64:
                        hi |= f >> np.uint64(64 - sh)
                else:
                    hi |= f << np.uint64(sh - 64)
            base = pos + g * width
            for b in range(min(8, width)):
                out[base + b] = np.uint8((lo >> np.uint64(8 * b)) & np.uint64(0xFF))
            for b in range(8, width):
                out[base + b] = np.uint8((hi >> np.uint64(8 * (b - 8))) & np.uint64(0xFF))
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
    if width == 1 or width == 2 or width == 4 or width == 8:
        per = 8 // width
        mask = np.uint32((1 << width) - 1)
        full = n // per
        rows = fields[: full * per].reshape(full, per)
        for i in range(full):
            byte = np.uint32(buf[pos + i])
            for k in range(per):
                rows[i, k] = (byte >> np.uint32(k * width)) & mask
        for j in range(full * per, n):
            fields[j] = (np.uint32(buf[pos + j // per]) >> np.uint32((j % per) * width)) & mask
        return
    mask = (np.uint64(1) << np.uint64(width)) - U1
    start = 0
    if width <= 16:  # whole groups of 8 fields = w bytes
        groups = n >> 3
        for g in range(groups):
            base = pos + g * width
            lo = np.uint64(0)
            hi = np.uint64(0)
            for b in range(min(8, width)):
                lo |= np.uint64(buf[base + b]) << np.uint64(8 * b)
            for b in range(8, width):
                hi |= np.uint64(buf[base + b]) << np.uint64(8 * (b - 8))
            for k in range(8):
                sh = k * width
                if sh + width <= 64:
                    f = lo >> np.uint64(sh)
                elif sh >= 64:
                    f = hi >> np.uint64(sh - 64)
                else:
                    f = (lo >> np.uint64(sh)) | (hi << np.uint64(64 - sh))
                fields[8 * g + k] = np.uint32(f & mask)
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
