"""The compiled Numba kernels of the hot operators (one pass: random word, level, bit packing).

The entry points (`kernels` lists them) take the arguments of their namesakes in
`numpy_kernels` and write the same bytes; `kernels.backend` chooses between the two modules.
Most are one kernel; those at the end wrap one, or fall back to the NumPy twin's pieces where
nothing is compiled (whole-byte field widths, float64 natural compression). The other kernels
here are their building blocks. Numba is optional (`jit.njit`).

Bit layout and random words are those of `bitpack` and `counter_rng`.
"""

from __future__ import annotations

import math

import numpy as np

from . import numpy_kernels
from .jit import (
    CHUNK,
    chunk_words,
    njit,
    njit_fast,
    pack_chunk,
    pack_uint,
    unpack_chunk,
    unpack_uint,
)

MANT52 = np.uint64((1 << 52) - 1)
INV_2_32 = 2.0**-32

EXP32 = np.uint32(0x7F800000)
EXP64 = np.uint64(0x7FF0000000000000)


@njit
def all_finite(x):
    """True if no entry of the float32/float64 vector is NaN or ±Inf (exponent bits all ones)."""
    if x.itemsize == 4:
        bits = x.view(np.uint32)
        worst = np.uint32(0)
        for j in range(bits.size):
            worst = max(worst, bits[j] & EXP32)
        return worst != EXP32
    bits64 = x.view(np.uint64)
    worst64 = np.uint64(0)
    for j in range(bits64.size):
        worst64 = max(worst64, bits64[j] & EXP64)
    return worst64 != EXP64


@njit
def copy_finite_bits(src, dst, exponent):
    """``dst[:] = src`` for float bit patterns (uint32 views of float32, uint64 of float64);
    returns True if no value is NaN or ±Inf (``exponent``, the exponent mask, all ones),
    checked in the same pass."""
    worst = exponent ^ exponent
    for j in range(src.size):
        v = src[j]
        dst[j] = v
        worst = max(worst, v & exponent)
    return worst != exponent


# --- norms -----------------------------------------------------------------------------------
@njit_fast
def _norm2(x, lo, hi):
    xs = x[lo:hi]  # loops from 0 vectorise: Numba adds no negative-index checks
    acc = 0.0
    for j in range(xs.size):
        v = np.float64(xs[j])
        acc += v * v
    return math.sqrt(acc)


@njit_fast
def _norm1(x, lo, hi):
    xs = x[lo:hi]
    acc = 0.0
    for j in range(xs.size):
        acc += abs(np.float64(xs[j]))
    return acc


@njit
def block_absmax_bits(bits, block, mask):
    """Per block, the max of the sign-cleared bit patterns (``mask`` clears the sign bit).

    For non-negative IEEE floats integer order is value order, and NaN/Inf patterns exceed every
    finite one, so viewing the result as floats gives max|x_B| with NaN/Inf propagated.
    """
    d = bits.size
    nb = (d + block - 1) // block
    out = np.empty_like(bits[:nb])
    for b in range(nb):
        bs = bits[b * block : min(d, (b + 1) * block)]
        worst = bs[0] & mask
        for j in range(bs.size):
            worst = max(worst, bs[j] & mask)
        out[b] = worst
    return out


@njit
def block_norms(x, block, p):
    """‖x_B‖_p of each block (p = 1 or 2), accumulated in float64."""
    d = x.size
    nb = (d + block - 1) // block
    out = np.empty(nb, dtype=np.float64)
    for b in range(nb):
        lo = b * block
        hi = min(lo + block, d)
        out[b] = _norm2(x, lo, hi) if p == 2 else _norm1(x, lo, hi)
    return out
# --- signs -----------------------------------------------------------------------------------
@njit
def sign_pack(x, out):
    """Bit j of ``out`` = 1 where x[j] < 0 (sign(0) = +1); returns False if x has NaN/Inf."""
    d = x.size
    full = d // 8
    for i in range(full):
        j = 8 * i
        out[i] = (
            (x[j] < 0)
            | ((x[j + 1] < 0) << 1)
            | ((x[j + 2] < 0) << 2)
            | ((x[j + 3] < 0) << 3)
            | ((x[j + 4] < 0) << 4)
            | ((x[j + 5] < 0) << 5)
            | ((x[j + 6] < 0) << 6)
            | ((x[j + 7] < 0) << 7)
        )
    if d % 8:
        byte = 0
        for j in range(8 * full, d):
            byte |= (x[j] < 0) << (j - 8 * full)
        out[full] = byte
    return all_finite(x)


@njit
def sign_unpack(buf, scales, block, out, accumulate=False):
    """out[j] = scales[block of j] · (−1 if bit j else +1) (``accumulate``: out[j] += …).

    Whole 64-coordinate words expand from one uint64 (the inner loop over its bits vectorises:
    the choice between s and −s is a select, never arithmetic such as s − 2s·bit, which would
    overflow for |s| > max/2); the rest of each block goes coordinate by coordinate.
    """
    d = out.size
    for b in range(scales.size):
        lo = b * block
        hi = min(d, lo + block)
        s = scales[b]
        neg_s = -s
        if lo % 64 == 0:
            nwords = (hi - lo) >> 6
            rows = out[lo : lo + 64 * nwords].reshape(nwords, 64)
            base = lo >> 3
            for i in range(nwords):
                w = np.uint64(0)
                for k in range(8):
                    w |= np.uint64(buf[base + 8 * i + k]) << np.uint64(8 * k)
                row = rows[i]
                if accumulate:
                    for k in range(64):
                        row[k] += neg_s if (w >> np.uint64(k)) & np.uint64(1) else s
                else:
                    for k in range(64):
                        row[k] = neg_s if (w >> np.uint64(k)) & np.uint64(1) else s
            lo += 64 * nwords
        for j in range(lo, hi):
            v = neg_s if (buf[j >> 3] >> (j & 7)) & 1 else s
            out[j] = out[j] + v if accumulate else v


# --- dithering (random dithering / QSGD / TernGrad) ------------------------------------------
@njit
def dither_levels(x, scale, block, s, key, width, out):
    """Signed-level fields ``level | sign << (width − 1)`` packed into ``out``.

    ``level = ⌊t + u_j⌋`` with ``t = |x_j|·scale[block]``, ``u_j = word32_j·2⁻³²``, capped at s;
    the sign bit is set only for non-zero levels.
    """
    d = x.size
    words64 = np.empty(CHUNK // 2, dtype=np.uint64)
    fields = np.empty(CHUNK, dtype=np.uint32)
    sbit = np.uint32(1) << np.uint32(width - 1)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        words = chunk_words(key, c0, n, words64)
        j = c0
        while j < c0 + n:  # runs of one block inside the chunk
            b = j // block
            stop = min(c0 + n, (b + 1) * block)
            sc = scale[b]
            xs, ws, fs = x[j:stop], words[j - c0 : stop - c0], fields[j - c0 : stop - c0]
            for i in range(xs.size):
                v = np.float64(xs[i])
                t = abs(v) * sc
                lev = min(np.int64(t + np.float64(np.int64(ws[i])) * INV_2_32), s)
                fs[i] = np.uint32(lev) | (sbit * np.uint32((lev > 0) & (v < 0)))
            j = stop
        pack_chunk(fields, n, width, out, c0 * width)


# --- uniform grid (weight quantisation) -------------------------------------------------------
@njit
def block_extremes(x, block, lo, hi):
    """Per block, the minimum and maximum of ``x`` (as float64) into ``lo`` and ``hi``."""
    for b in range(lo.size):
        xs = x[b * block : min(x.size, (b + 1) * block)]
        low = high = np.float64(xs[0])
        for i in range(1, xs.size):
            v = np.float64(xs[i])
            low = min(low, v)
            high = max(high, v)
        lo[b], hi[b] = low, high


@njit
def uniform_levels(x, lo, hi, block, top, key, stochastic, width, out):
    """Grid levels ``min(⌊(x_j − lo)·(top/(hi − lo)) + u_j⌋, top)`` packed into ``out``
    (``u_j`` the counter-based uniform when ``stochastic``, else 0.5; level 0 on a constant
    block)."""
    d = x.size
    words64 = np.zeros(CHUNK // 2, dtype=np.uint64)
    fields = np.empty(CHUNK, dtype=np.uint32)
    ceiling = np.float64(top)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        words = chunk_words(key, c0, n, words64) if stochastic else words64.view(np.uint32)
        j = c0
        while j < c0 + n:  # runs of one block inside the chunk
            b = j // block
            stop = min(c0 + n, (b + 1) * block)
            low, span = lo[b], hi[b] - lo[b]
            scale = ceiling / span if span > 0 else 0.0
            if not math.isfinite(scale):  # a range below top/1.8e308: every level is lo
                scale = 0.0
            xs, ws, fs = x[j:stop], words[j - c0 : stop - c0], fields[j - c0 : stop - c0]
            for i in range(xs.size):
                shift = np.float64(np.int64(ws[i])) * INV_2_32 if stochastic else 0.5
                t = math.floor((np.float64(xs[i]) - low) * scale + shift)
                fs[i] = np.uint32(max(0.0, min(t, ceiling)))
            j = stop
        pack_chunk(fields, n, width, out, c0 * width)


@njit
def uniform_values(buf, lo, hi, block, top, width, out):
    """``out[j] = lo·(1 − f) + hi·f`` with ``f = level_j/top`` of the block of j."""
    d = out.size
    fields = np.empty(CHUNK, dtype=np.uint32)
    ceiling = np.float64(top)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        unpack_chunk(buf, c0 * width, n, width, fields)
        j = c0
        while j < c0 + n:
            b = j // block
            stop = min(c0 + n, (b + 1) * block)
            low, high = lo[b], hi[b]
            fs, os_ = fields[j - c0 : stop - c0], out[j:stop]
            for i in range(fs.size):
                f = np.float64(fs[i]) / ceiling
                os_[i] = low * (1.0 - f) + high * f
            j = stop


@njit
def signed_level_values(buf, norm, block, s, width, pow2, out, accumulate=False, round32=False):
    """Decode signed-level fields: out[j] = ±f(level)·norm[block of j].

    f(ℓ) = ℓ (dithering, with norm ν/s) or, with ``pow2``, f(ℓ) = 2^(ℓ−s) and f(0) = 0
    (natural dithering, norm ν), built from exponent bits so the loop vectorises. With
    ``accumulate`` the values are added to ``out`` (float64), rounded to float32 first when
    ``round32`` (the payload's dtype), i.e. exactly what decoding and then adding gives. Returns −1,
    or the first coordinate whose field is impossible (a level above s, or a sign bit on
    level 0). The sign is applied by a select (``−val`` or ``val``), so values up to the
    largest finite float cannot overflow.
    """
    d = out.size
    fields = np.empty(CHUNK, dtype=np.uint32)
    scale_bits = np.empty(CHUNK, dtype=np.uint64)
    scales = scale_bits.view(np.float64)
    mask = (np.uint32(1) << np.uint32(width - 1)) - np.uint32(1)
    shift = np.uint32(width - 1)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        unpack_chunk(buf, c0 * width, n, width, fields)
        bad = False
        for i in range(n):
            f = fields[i]
            lev = min(f & mask, np.uint32(s))
            bad |= ((f & mask) > s) | ((lev == 0) & ((f >> shift) != 0))
            if pow2:  # IEEE float64 2^(ℓ−s): biased exponent ℓ − s + 1023, zero for ℓ = 0
                scale_bits[i] = (np.uint64(lev + np.uint32(1023 - s)) << np.uint64(52)
                                 if lev > 0 else np.uint64(0))
            else:
                scales[i] = np.float64(lev)
        j = c0
        while j < c0 + n:
            b = j // block
            stop = min(c0 + n, (b + 1) * block)
            nu = norm[b]
            fs, sc, os = fields[j - c0 : stop - c0], scales[j - c0 : stop - c0], out[j:stop]
            if accumulate:
                for i in range(fs.size):
                    val = sc[i] * nu
                    val = -val if fs[i] >> shift else val
                    os[i] += np.float64(np.float32(val)) if round32 else val
            else:
                for i in range(fs.size):
                    val = sc[i] * nu
                    os[i] = -val if fs[i] >> shift else val
            j = stop
        if bad:
            for i in range(n):
                f = fields[i]
                if (f & mask) > s or ((f & mask) == 0 and (f >> shift) != 0):
                    return c0 + i
    return -1


# --- natural compression ---------------------------------------------------------------------
@njit
def natural_pack32(bits, key, out):
    """C_nat of float32 bit patterns: fields ``sign << 8 | exponent'`` (9 bits).

    Rounds the exponent up with probability mantissa/2²³ (the top 23 bits of the word decide,
    so the probability is exact). Returns the first index whose input is NaN/Inf or whose
    exponent would round up to 255, or −1.
    """
    d = bits.size
    words64 = np.empty(CHUNK // 2, dtype=np.uint64)
    fields = np.empty(CHUNK, dtype=np.uint32)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        words = chunk_words(key, c0, n, words64)
        worst = np.uint32(0)
        bc = bits[c0 : c0 + n]
        for i in range(n):
            b = bc[i]
            e = (b >> np.uint32(23)) & np.uint32(0xFF)
            e += np.uint32((words[i] >> np.uint32(9)) < (b & np.uint32(0x7FFFFF)))
            worst = max(worst, e)
            fields[i] = ((b >> np.uint32(31)) << np.uint32(8)) | e
        if worst >= 0xFF:  # NaN/Inf input (exponent 255) or rounding up to 255
            for i in range(n):
                b = bc[i]
                e = (b >> np.uint32(23)) & np.uint32(0xFF)
                up = (words[i] >> np.uint32(9)) < (b & np.uint32(0x7FFFFF))
                if e == 0xFF or (e == 0xFE and up):
                    return c0 + i
        pack_chunk(fields, n, 9, out, c0 * 9)
    return -1


@njit
def _natural_bits_chunk(buf, c0, n, fields, out_bits):
    """float32 bit patterns of C_nat fields c0 … c0+n−1 into out_bits[:n]; −1 or a bad index."""
    unpack_chunk(buf, c0 * 9, n, 9, fields)
    worst = np.uint32(0)
    for i in range(n):
        f = fields[i]
        e = f & np.uint32(0xFF)
        worst = max(worst, e)
        out_bits[i] = ((f >> np.uint32(8)) << np.uint32(31)) | (e << np.uint32(23))
    if worst == 0xFF:  # exponent field of all ones: no value of C_nat, a corrupted buffer
        for i in range(n):
            if (fields[i] & np.uint32(0xFF)) == 0xFF:
                return c0 + i
    return -1


@njit
def natural_unpack32(buf, out_bits):
    """Inverse of `natural_pack32` into float32 bit patterns; returns −1 or the first bad j."""
    d = out_bits.size
    fields = np.empty(CHUNK, dtype=np.uint32)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        bad = _natural_bits_chunk(buf, c0, n, fields, out_bits[c0 : c0 + n])
        if bad >= 0:
            return bad
    return -1


@njit
def natural_add32(buf, acc):
    """acc[j] += the C_nat value of coordinate j (float32 payload); returns −1 or a bad j."""
    d = acc.size
    fields = np.empty(CHUNK, dtype=np.uint32)
    bits = np.empty(CHUNK, dtype=np.uint32)
    values = bits.view(np.float32)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        bad = _natural_bits_chunk(buf, c0, n, fields, bits)
        if bad >= 0:
            return bad
        ac = acc[c0 : c0 + n]
        for i in range(n):
            ac[i] += values[i]
    return -1


# --- natural dithering -----------------------------------------------------------------------
@njit
def natural_dither_levels(x, inv_norm, block, s, key, width, out):
    """Level index L ∈ {0…s} (value 2^(L−s), 0 for L = 0) with unbiased rounding, plus sign."""
    d = x.size
    words64 = np.empty(CHUNK // 2, dtype=np.uint64)
    fields = np.empty(CHUNK, dtype=np.uint32)
    sbit = np.uint32(1) << np.uint32(width - 1)
    bottom = 2.0 ** (s - 1)  # 1 / 2^(1−s)
    ybuf = np.empty(CHUNK, dtype=np.float64)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        words = chunk_words(key, c0, n, words64)
        j = c0
        while j < c0 + n:
            b = j // block
            stop = min(c0 + n, (b + 1) * block)
            inv = inv_norm[b]
            xs, ws, fs = x[j:stop], words[j - c0 : stop - c0], fields[j - c0 : stop - c0]
            ys = ybuf[: xs.size]
            for i in range(xs.size):
                ys[i] = min(abs(np.float64(xs[i])) * inv, 1.0)
            ybits = ys.view(np.uint64)
            for i in range(xs.size):
                y = ys[i]
                yb = ybits[i]
                lev = np.int64(yb >> np.uint64(52)) - 1023 + s  # ⌊log₂ y⌋ + s for normal y
                w = np.uint64(ws[i])
                if lev >= 1:  # between 2^(L−s) and 2^(L+1−s): P(up) = mantissa / 2⁵²
                    lev += (w << np.uint64(20)) < (yb & MANT52)
                else:  # between 0 and 2^(1−s): P(up) = y·2^(s−1)
                    lev = np.int64(np.float64(np.int64(w)) * INV_2_32 < y * bottom)
                fs[i] = np.uint32(lev) | (sbit * np.uint32((lev > 0) & (xs[i] < 0)))
            j = stop
        pack_chunk(fields, n, width, out, c0 * width)


# --- top-k candidate filter ------------------------------------------------------------------
@njit
def indices_at_least(x, threshold, out):
    """Write the indices j with |x_j| ≥ threshold into ``out``; return their count (capped)."""
    n = 0
    cap = out.size
    for j in range(x.size):
        if abs(x[j]) >= threshold:
            if n < cap:
                out[n] = j
            n += 1
    return n


# --- source-coded levels (coder=golomb) ------------------------------------------------------
@njit
def symbol_values(sym, unit, block, out):
    """``out[j] = ±ℓ·unit[j // block]`` for the signed level of symbol ``sym[j]``."""
    for j in range(sym.size):
        s = sym[j]
        val = np.float64((s + 1) // 2) * unit[j // block]
        out[j] = -val if s > 0 and s % 2 == 0 else val


# --- entry points that are not one kernel ----------------------------------------------------
#: per float width: the unsigned view and the exponent mask (all ones = NaN/±Inf)
BIT_VIEWS = {4: (np.dtype("<u4"), EXP32), 8: (np.dtype("<u8"), EXP64)}


def copy_finite(body, out):
    """``out[:] =`` the little-endian values in the bytes ``body``; True if none is NaN/±Inf
    (checked in the copy)."""
    bits, exponent = BIT_VIEWS[out.itemsize]
    return copy_finite_bits(body.view(bits), out.view(bits), exponent)


def norms(x, block, p):
    """‖x_B‖_p per block in float64 (p ∈ {1, 2, inf}), summed in float64 (the order differs
    from NumPy's only in the last bits; max|x_B| is exact)."""
    if not math.isinf(p):
        return block_norms(x, block, int(p))
    if x.size == 0:
        return np.zeros(0)
    utype = np.uint32 if x.itemsize == 4 else np.uint64
    mask = utype(np.iinfo(utype).max >> 1)
    return block_absmax_bits(x.view(utype), block, mask).view(x.dtype).astype(np.float64)


def pack_fields(values, width):
    """`bitpack.pack_fields` compiled (whole-byte widths are a NumPy cast)."""
    if width in numpy_kernels.BYTE_WIDTHS:
        return numpy_kernels.pack_fields(values, width)
    out = np.zeros(-(-values.size * width // 8), dtype=np.uint8)
    pack_uint(values.astype(np.uint32), width, out)
    return out


def unpack_fields(buf, width, n):
    """`bitpack.unpack_fields` compiled (whole-byte widths are a NumPy cast)."""
    if width in numpy_kernels.BYTE_WIDTHS:
        return numpy_kernels.unpack_fields(buf, width, n)
    out = np.empty(n, dtype=np.uint32)
    unpack_uint(buf, width, out)
    return out if width > 8 else out.astype(np.uint8)


def natural_pack(x, key, out):
    """`numpy_kernels.natural_pack`: compiled for float32, NumPy fields packed here for
    float64."""
    if x.dtype == np.float32:
        return natural_pack32(x.view(np.uint32), key, out)
    fields, bad = numpy_kernels.natural_fields(x, key)
    pack_uint(fields, 1 + np.finfo(x.dtype).nexp, out)
    return bad


def natural_unpack(buf, out):
    """`numpy_kernels.natural_unpack`: compiled for float32, fields unpacked here for float64."""
    if out.dtype == np.float32:
        return natural_unpack32(buf, out.view(np.uint32))
    fields = np.empty(out.size, dtype=np.uint32)
    unpack_uint(buf, 1 + np.finfo(out.dtype).nexp, fields)
    return numpy_kernels.natural_values(fields, out)
