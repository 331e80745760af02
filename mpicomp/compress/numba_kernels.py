"""The compiled Numba kernels of the hot operators (one pass: random word, level, bit packing).

The entry points (`kernels` lists them) take the arguments of their namesakes in
`numpy_kernels` and write the same bytes; `kernels.backend` chooses between the two modules.
Most are one kernel; those at the end wrap one, choose its multi-threaded form (``*_threads``,
``parallel=True``: ranges of whole chunks, one per thread, when `threads.parts` says so), or
fall back to the NumPy twin's pieces where nothing is compiled (whole-byte field widths, float64
natural compression). The other kernels here are their building blocks. Numba is optional
(`jit.njit`).

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
    prange,
    unpack_chunk,
    unpack_uint,
)
from .threads import parts

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
def sign_pack_bits(bits, negative_above, exponent, out):
    """Bit j of ``out`` = 1 where the float bit pattern ``bits[j]`` is negative (unsigned
    ``> negative_above``, the pattern of −0, so sign(0) = +1); returns False if a value is NaN
    or ±Inf (``exponent``, the exponent mask, all ones), checked in the same pass.

    Whole 64-coordinate words are packed into one uint64 each (the loops vectorise).
    """
    d = bits.size
    words = d // 64
    rows = bits[: 64 * words].reshape(words, 64)
    packed = out[: 8 * words].view(np.uint64)
    worst = exponent ^ exponent
    for i in range(words):
        row = rows[i]
        w = np.uint64(0)
        for k in range(64):
            w |= np.uint64(row[k] > negative_above) << np.uint64(k)
        for k in range(64):
            worst = max(worst, row[k] & exponent)
        packed[i] = w
    for i in range(8 * words, (d + 7) // 8):
        byte = np.uint32(0)
        for j in range(8 * i, min(d, 8 * i + 8)):
            v = bits[j]
            byte |= np.uint32(v > negative_above) << np.uint32(j - 8 * i)
            worst = max(worst, v & exponent)
        out[i] = np.uint8(byte)
    return worst != exponent


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
def dither_range(x, scale, block, s, key, width, out, lo, hi, bound):
    """Signed-level fields ``level | sign << (width − 1)`` of coordinates lo … hi−1 (lo a
    multiple of `CHUNK`) packed into ``out``.

    ``level = ⌊t + u_j⌋`` with ``t = |x_j|·scale[block]``, ``u_j = word32_j·2⁻³²``, capped at s;
    the sign bit is set only for non-zero levels. With a non-empty ``bound`` (TernGrad's
    clipping) x_j is first clipped to ±bound[block] and rounded to x's dtype, as
    ``np.clip(x, −bound, bound).astype(x.dtype)`` does.
    """
    words64 = np.empty(CHUNK // 2, dtype=np.uint64)
    fields = np.empty(CHUNK, dtype=np.uint32)
    rounded = np.empty_like(x[:1])  # stores a clipped value in x's dtype
    sbit = np.uint32(1) << np.uint32(width - 1)
    clipping = bound.size > 0
    for c0 in range(lo, hi, CHUNK):
        n = min(CHUNK, hi - c0)
        words = chunk_words(key, c0, n, words64)
        j = c0
        while j < c0 + n:  # runs of one block inside the chunk
            b = j // block
            stop = min(c0 + n, (b + 1) * block)
            sc = scale[b]
            xs, ws, fs = x[j:stop], words[j - c0 : stop - c0], fields[j - c0 : stop - c0]
            if clipping:
                top = bound[b]
                for i in range(xs.size):
                    rounded[0] = min(max(np.float64(xs[i]), -top), top)
                    v = np.float64(rounded[0])
                    lev = min(np.int64(abs(v) * sc + np.float64(np.int64(ws[i])) * INV_2_32), s)
                    fs[i] = np.uint32(lev) | (sbit * np.uint32((lev > 0) & (v < 0)))
            else:
                for i in range(xs.size):
                    v = np.float64(xs[i])
                    lev = min(np.int64(abs(v) * sc + np.float64(np.int64(ws[i])) * INV_2_32), s)
                    fs[i] = np.uint32(lev) | (sbit * np.uint32((lev > 0) & (v < 0)))
            j = stop
        pack_chunk(fields, n, width, out, c0 * width)


@njit(parallel=True)
def dither_threads(x, scale, block, s, key, width, out, bound, nparts):
    """`dither_range` of the whole vector, in ``nparts`` ranges of whole chunks at once."""
    span = _span(x.size, nparts)
    for p in prange(nparts):
        lo = min(x.size, p * span)
        dither_range(x, scale, block, s, key, width, out, lo, min(x.size, lo + span), bound)


@njit
def _span(d, nparts):
    """Coordinates of each of ``nparts`` parts of ``d``: a whole number of chunks."""
    chunks = (d + CHUNK - 1) // CHUNK
    return (chunks + nparts - 1) // nparts * CHUNK


@njit
def _first_bad(bad):
    """The first non-negative entry of ``bad`` (one per part, in order), else −1."""
    for p in range(bad.size):
        if bad[p] >= 0:
            return bad[p]
    return -1


# --- TernGrad's clipping ---------------------------------------------------------------------
@njit
def _term(x, i, center, square):
    """x[i] in float64, or ``(x[i] − center)²`` when ``square``."""
    v = np.float64(x[i])
    if square:
        v -= center
        return v * v
    return v


@njit
def _pairwise(x, lo, n, center, square):
    """NumPy's pairwise float64 sum of ``_term`` over x[lo:lo+n]: below 8 terms in order, up
    to 128 in 8 lanes, else the two halves; the same additions in the same order."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += _term(x, i, center, square)
        return res
    if n <= 128:
        r0, r1 = _term(x, lo, center, square), _term(x, lo + 1, center, square)
        r2, r3 = _term(x, lo + 2, center, square), _term(x, lo + 3, center, square)
        r4, r5 = _term(x, lo + 4, center, square), _term(x, lo + 5, center, square)
        r6, r7 = _term(x, lo + 6, center, square), _term(x, lo + 7, center, square)
        m = n - n % 8
        for i in range(lo + 8, lo + m, 8):
            r0 += _term(x, i, center, square)
            r1 += _term(x, i + 1, center, square)
            r2 += _term(x, i + 2, center, square)
            r3 += _term(x, i + 3, center, square)
            r4 += _term(x, i + 4, center, square)
            r5 += _term(x, i + 5, center, square)
            r6 += _term(x, i + 6, center, square)
            r7 += _term(x, i + 7, center, square)
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for i in range(lo + m, lo + n):
            res += _term(x, i, center, square)
        return res
    half = n // 2
    half -= half % 8
    return (_pairwise(x, lo, half, center, square)
            + _pairwise(x, lo + half, n - half, center, square))


@njit
def block_std(x, block, buffer):
    """``np.std(x_B, dtype=np.float64)`` of each block, bit for bit: the mean's sum runs over
    ``buffer``-element pieces when x is float32 (NumPy's casting buffer), then the pairwise
    sum of the squared deviations."""
    d = x.size
    nb = (d + block - 1) // block
    out = np.empty(nb, dtype=np.float64)
    for b in range(nb):
        lo = b * block
        n = min(d, lo + block) - lo
        if x.itemsize == 8:
            total = _pairwise(x, lo, n, 0.0, False)
        else:
            total = 0.0
            for p in range(lo, lo + n, buffer):
                total += _pairwise(x, p, min(buffer, lo + n - p), 0.0, False)
        mean = total / n
        out[b] = math.sqrt(_pairwise(x, lo, n, mean, True) / n)
    return out


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
def natural_pack32(bits, key, out, lo, hi):
    """C_nat of the float32 bit patterns lo … hi−1 (lo a multiple of `CHUNK`): fields
    ``sign << 8 | exponent'`` (9 bits).

    Rounds the exponent up with probability mantissa/2²³ (the top 23 bits of the word decide,
    so the probability is exact). Returns the first index whose input is NaN/Inf or whose
    exponent would round up to 255, or −1.
    """
    words64 = np.empty(CHUNK // 2, dtype=np.uint64)
    fields = np.empty(CHUNK, dtype=np.uint32)
    for c0 in range(lo, hi, CHUNK):
        n = min(CHUNK, hi - c0)
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


@njit(parallel=True)
def natural_pack32_threads(bits, key, out, nparts):
    """`natural_pack32` of the whole vector in ``nparts`` ranges at once; the first bad index."""
    span = _span(bits.size, nparts)
    bad = np.full(nparts, -1, dtype=np.int64)
    for p in prange(nparts):
        lo = min(bits.size, p * span)
        bad[p] = natural_pack32(bits, key, out, lo, min(bits.size, lo + span))
    return _first_bad(bad)


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
def natural_dither_range(x, inv_norm, block, s, key, width, out, lo, hi):
    """Level index L ∈ {0…s} (value 2^(L−s), 0 for L = 0) with unbiased rounding, plus sign,
    of coordinates lo … hi−1 (lo a multiple of `CHUNK`)."""
    words64 = np.empty(CHUNK // 2, dtype=np.uint64)
    fields = np.empty(CHUNK, dtype=np.uint32)
    sbit = np.uint32(1) << np.uint32(width - 1)
    bottom = 2.0 ** (s - 1)  # 1 / 2^(1−s)
    ybuf = np.empty(CHUNK, dtype=np.float64)
    for c0 in range(lo, hi, CHUNK):
        n = min(CHUNK, hi - c0)
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


@njit(parallel=True)
def natural_dither_threads(x, inv_norm, block, s, key, width, out, nparts):
    """`natural_dither_range` of the whole vector in ``nparts`` ranges at once."""
    span = _span(x.size, nparts)
    for p in prange(nparts):
        lo = min(x.size, p * span)
        natural_dither_range(x, inv_norm, block, s, key, width, out, lo, min(x.size, lo + span))


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


# --- half-precision casts --------------------------------------------------------------------
#: |x| bit patterns of 65504, float16's largest finite value, as float32 and float64
FP16_MAX32 = np.uint32(0x477FE000)
FP16_MAX64 = np.uint64(0x40EFFC0000000000)
#: 2²⁴: a float16 subnormal is round(|x|·2²⁴)·2⁻²⁴
HALF_SUB_SCALE = 2.0**24


@njit
def half_bits(x, out):
    """IEEE float16 bit patterns of ``x`` (float32 or float64, rounded to nearest even straight
    from x's precision) into the uint16 ``out``; returns False if some |x_j| > 65504 or is
    NaN/Inf (``out`` is then not meaningful).

    Normal halves round the mantissa with integer arithmetic (a carry moves the exponent);
    below 2⁻¹⁴ the half is the subnormal round(|x|·2²⁴) (``np.rint``: ties to even). Both are
    computed and one selected, so the loop vectorises.
    """
    if x.itemsize == 4:
        bits = x.view(np.uint32)
        worst = np.uint32(0)
        scale = np.float32(HALF_SUB_SCALE)
        smallest = np.float32(1.0 / 16384)
        for j in range(bits.size):
            b = bits[j]
            a = b & np.uint32(0x7FFFFFFF)
            worst = max(worst, a)
            sub = np.uint32(np.int32(np.rint(min(abs(x[j]), smallest) * scale)))
            normal = (a - np.uint32(112 << 23) + np.uint32(0xFFF)
                      + ((a >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
            h = sub if a < np.uint32(113 << 23) else normal
            out[j] = np.uint16(((b >> np.uint32(16)) & np.uint32(0x8000)) | h)
        return worst <= FP16_MAX32
    bits64 = x.view(np.uint64)
    worst64 = np.uint64(0)
    for j in range(bits64.size):
        b = bits64[j]
        a = b & np.uint64(0x7FFFFFFFFFFFFFFF)
        worst64 = max(worst64, a)
        sub64 = np.uint64(np.int64(np.rint(min(abs(x[j]), 1.0 / 16384) * HALF_SUB_SCALE)))
        normal64 = (a - np.uint64(1008 << 52) + np.uint64((1 << 41) - 1)
                    + ((a >> np.uint64(42)) & np.uint64(1))) >> np.uint64(42)
        h64 = sub64 if a < np.uint64(1009 << 52) else normal64
        out[j] = np.uint16(((b >> np.uint64(48)) & np.uint64(0x8000)) | h64)
    return worst64 <= FP16_MAX64


@njit
def _half_values32(h, c0, n, bits, values):
    """float32 values (``values``, whose uint32 view is ``bits``) of the halves h[c0:c0+n];
    returns the largest ``|h|`` pattern (≥ 0x7C00: NaN/Inf among them).

    The half's sign, exponent and mantissa moved to their float32 places read as a float 2¹¹²
    times too small (subnormal halves land on float32 subnormals): one exact multiply fixes
    both, in two loops that vectorise.
    """
    worst = np.uint32(0)
    for i in range(n):
        v = np.uint32(h[c0 + i])
        worst = max(worst, v & np.uint32(0x7FFF))
        bits[i] = ((v & np.uint32(0x8000)) << np.uint32(16)) | (
            (v & np.uint32(0x7FFF)) << np.uint32(13))
    for i in range(n):
        values[i] *= np.float32(2.0**112)
    return worst


@njit
def half_values(h, out):
    """``out[j]`` = the float16 pattern h[j] as float32/float64 (exact); returns −1, or the
    first j whose half is NaN/±Inf."""
    d = h.size
    scratch = np.empty(CHUNK, dtype=np.float32)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        if out.itemsize == 4:
            values = out[c0 : c0 + n]
            worst = _half_values32(h, c0, n, values.view(np.uint32), values)
        else:
            worst = _half_values32(h, c0, n, scratch.view(np.uint32), scratch)
            oc = out[c0 : c0 + n]
            for i in range(n):
                oc[i] = scratch[i]
        if worst >= np.uint32(0x7C00):
            for i in range(n):
                if (h[c0 + i] & np.uint16(0x7C00)) == np.uint16(0x7C00):
                    return c0 + i
    return -1


@njit
def brain_bits(x, out):
    """bfloat16 patterns of ``x`` (float64 first rounded to float32) into the uint16 ``out``:
    the top half of the float32 pattern, rounded to nearest even; returns False if a value is
    NaN/Inf or rounds past the largest finite bfloat16."""
    d = x.size
    scratch = np.empty(CHUNK, dtype=np.float32)
    worst = np.uint32(0)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        if x.itemsize == 4:
            bits = x[c0 : c0 + n].view(np.uint32)
        else:
            xc = x[c0 : c0 + n]
            for i in range(n):
                scratch[i] = np.float32(xc[i])
            bits = scratch[:n].view(np.uint32)
        oc = out[c0 : c0 + n]
        for i in range(n):
            b = bits[i]
            r = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            worst = max(worst, max(b & EXP32, (r & np.uint32(0x7F80)) << np.uint32(16)))
            oc[i] = np.uint16(r)
    return worst != EXP32


@njit
def brain_values(h, out):
    """``out[j]`` = the bfloat16 pattern h[j] as float32/float64 (exact); returns −1, or the
    first j whose value is NaN/±Inf."""
    d = h.size
    scratch = np.empty(CHUNK, dtype=np.float32)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        bits = out[c0 : c0 + n].view(np.uint32) if out.itemsize == 4 else scratch.view(np.uint32)
        worst = np.uint32(0)
        for i in range(n):
            v = np.uint32(h[c0 + i])
            worst = max(worst, v & np.uint32(0x7F80))
            bits[i] = v << np.uint32(16)
        if out.itemsize == 8:
            oc = out[c0 : c0 + n]
            for i in range(n):
                oc[i] = scratch[i]
        if worst == np.uint32(0x7F80):
            for i in range(n):
                if (h[c0 + i] & np.uint16(0x7F80)) == np.uint16(0x7F80):
                    return c0 + i
    return -1


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
    """`numpy_kernels.natural_pack`: compiled for float32 (on `threads.parts` threads), NumPy
    fields packed here for float64."""
    if x.dtype == np.float32:
        nparts = parts(x.size)
        if nparts > 1:
            return natural_pack32_threads(x.view(np.uint32), key, out, nparts)
        return natural_pack32(x.view(np.uint32), key, out, 0, x.size)
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


NO_BOUND = np.zeros(0)
#: per float width: the pattern of −0 (larger unsigned patterns are negative numbers)
NEGATIVE_ABOVE = {4: np.uint32(0x80000000), 8: np.uint64(0x8000000000000000)}


def sign_pack(x, out):
    """Bit j of ``out`` = 1 where x[j] < 0 (sign(0) = +1); returns False if x has NaN/Inf
    (one pass over x)."""
    bits, exponent = BIT_VIEWS[x.itemsize]
    if out.ctypes.data % 8:  # whole words are written as uint64: pack aligned, then copy
        aligned = np.empty_like(out)
        ok = sign_pack_bits(x.view(bits), NEGATIVE_ABOVE[x.itemsize], exponent, aligned)
        out[:] = aligned
        return ok
    return sign_pack_bits(x.view(bits), NEGATIVE_ABOVE[x.itemsize], exponent, out)


def dither_levels(x, scale, block, s, key, width, out, bound=None):
    """Signed-level fields of random dithering into ``out`` (`dither_range` over the whole
    vector, on `threads.parts` threads); ``bound``: TernGrad's clip per block, or None."""
    bound = NO_BOUND if bound is None else bound
    nparts = parts(x.size)
    if nparts > 1:
        dither_threads(x, scale, block, s, key, width, out, bound, nparts)
    else:
        dither_range(x, scale, block, s, key, width, out, 0, x.size, bound)


def natural_dither_levels(x, inv_norm, block, s, key, width, out):
    """Natural dithering's fields into ``out`` (`natural_dither_range` over the whole vector,
    on `threads.parts` threads)."""
    nparts = parts(x.size)
    if nparts > 1:
        natural_dither_threads(x, inv_norm, block, s, key, width, out, nparts)
    else:
        natural_dither_range(x, inv_norm, block, s, key, width, out, 0, x.size)


def clip_bounds(x, block, clip):
    """TernGrad's clip ``clip·σ_B`` per block (float64; σ_B as ``np.std(x_B, dtype=float64)``
    gives it, bit for bit)."""
    return clip * block_std(x, block, np.getbufsize())


def fp16_pack(x, out):
    """float16 patterns of ``x`` into the bytes ``out`` (2 a value, little endian); False if
    some |x_j| > 65504 or is NaN/Inf."""
    return half_bits(x, out.view(np.dtype("<u2")))


def fp16_unpack(body, out):
    """``out`` = the float16 values in the bytes ``body``; −1 or the first NaN/Inf coordinate."""
    return half_values(body.view(np.dtype("<u2")), out)


def bf16_pack(x, out):
    """bfloat16 patterns of ``x`` into the bytes ``out``; False if a value is NaN/Inf or
    rounds past the largest finite bfloat16."""
    return brain_bits(x, out.view(np.dtype("<u2")))


def bf16_unpack(body, out):
    """``out`` = the bfloat16 values in the bytes ``body``; −1 or the first NaN/Inf
    coordinate."""
    return brain_values(body.view(np.dtype("<u2")), out)
