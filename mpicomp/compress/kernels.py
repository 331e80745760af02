"""Fused Numba kernels for the hot operators (one pass: random word, level, bit packing).

Numba is optional. `active()` says whether the compiled kernels are used; set the environment
variable ``MPICOMP_KERNELS=numpy`` (or use `forced`) to take the NumPy fallbacks, which produce
the same bytes — the tests check that. The sequential coders (Elias) have no vectorised form:
without Numba they run as plain Python (correct, slow).

Bit layout and random words are those of `bitpack` and `counter_rng`.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager

import numpy as np

try:  # pragma: no cover - exercised by whichever environment runs the tests
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    numba = None
    HAVE_NUMBA = False

KERNEL_CHOICES = ("numba", "numpy")
_choice = os.environ.get("MPICOMP_KERNELS", "numba")
if _choice not in KERNEL_CHOICES:
    raise ValueError(f"MPICOMP_KERNELS={_choice!r}: choose one of {', '.join(KERNEL_CHOICES)}")
_use_numba = HAVE_NUMBA and _choice == "numba"


def active() -> bool:
    """True when the compiled Numba kernels are in use."""
    return _use_numba


@contextmanager
def forced(kind: str):
    """Temporarily use ``"numba"`` or ``"numpy"`` kernels (tests and benchmarks)."""
    global _use_numba
    if kind not in KERNEL_CHOICES:
        raise ValueError(f"kernel kind {kind!r}: choose one of {', '.join(KERNEL_CHOICES)}")
    if kind == "numba" and not HAVE_NUMBA:
        raise RuntimeError("numba is not installed")
    old, _use_numba = _use_numba, kind == "numba"
    try:
        yield
    finally:
        _use_numba = old


def njit(fn):
    """``numba.njit(cache=True, nogil=True)`` when Numba is installed, else ``fn`` itself."""
    if HAVE_NUMBA:
        return numba.njit(cache=True, nogil=True)(fn)
    return fn


def njit_fast(fn):
    """Like `njit`, allowing reassociation (for reductions whose order does not matter)."""
    if HAVE_NUMBA:
        return numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})(fn)
    return fn


U1 = np.uint64(1)
GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
LOW32 = np.uint64(0xFFFFFFFF)


@njit
def splitmix(key, counter):
    """SplitMix64 output for one counter (see `counter_rng.splitmix64`)."""
    z = (np.uint64(counter) + U1) * GAMMA + key
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


# --- norms -----------------------------------------------------------------------------------
@njit_fast
def block_norms(x, block, p):
    """‖x_B‖_p of each block (p = 1, 2 or 0 for ∞), accumulated in float64."""
    d = x.size
    nb = (d + block - 1) // block
    out = np.empty(nb, dtype=np.float64)
    for b in range(nb):
        lo = b * block
        hi = min(lo + block, d)
        acc = 0.0
        if p == 2:
            for j in range(lo, hi):
                v = np.float64(x[j])
                acc += v * v
            out[b] = math.sqrt(acc)
        elif p == 1:
            for j in range(lo, hi):
                acc += abs(np.float64(x[j]))
            out[b] = acc
        else:
            for j in range(lo, hi):
                v = abs(np.float64(x[j]))
                if v > acc:
                    acc = v
            out[b] = acc
    return out


# --- signs -----------------------------------------------------------------------------------
@njit
def sign_pack(x, out):
    """Bit j of ``out`` = 1 where x[j] < 0 (sign(0) = +1)."""
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


@njit
def sign_unpack(buf, scales, block, out):
    """out[j] = scales[j // block] · (−1 if bit j else +1)."""
    d = out.size
    for j0 in range(0, d, 8):
        byte = buf[j0 // 8]
        for k in range(min(8, d - j0)):
            j = j0 + k
            s = scales[j // block]
            out[j] = -s if (byte >> k) & 1 else s


# --- generic b-bit field writer --------------------------------------------------------------
@njit
def _flush(out, pos, acc, nacc):
    while nacc >= 8:
        out[pos] = acc & np.uint64(0xFF)
        acc >>= np.uint64(8)
        nacc -= 8
        pos += 1
    return pos, acc, nacc


@njit
def _finish(out, pos, acc, nacc):
    while nacc > 0:
        out[pos] = acc & np.uint64(0xFF)
        acc >>= np.uint64(8)
        nacc -= 8
        pos += 1


# --- dithering (random dithering / QSGD / TernGrad) ------------------------------------------
@njit
def dither_levels(x, scale, block, s, key, width, out):
    """Signed-level fields ``level | sign << (width − 1)`` packed into ``out``.

    ``level = ⌊t⌋ + [word32_j < frac(t)·2³²]`` with ``t = |x_j|·scale[block]``, capped at s;
    the sign bit is set only for non-zero levels. Returns the number of non-zero levels.
    """
    d = x.size
    acc = np.uint64(0)
    nacc = 0
    pos = 0
    nnz = 0
    h = np.uint64(0)
    sbit = np.uint64(1) << np.uint64(width - 1)
    for j in range(d):
        if (j & 1) == 0:
            h = splitmix(key, j >> 1)
            w = h & LOW32
        else:
            w = h >> np.uint64(32)
        v = np.float64(x[j])
        t = abs(v) * scale[j // block]
        lev = int(t)
        if np.float64(w) < (t - lev) * 4294967296.0:
            lev += 1
        if lev > s:
            lev = s
        f = np.uint64(lev)
        if lev > 0:
            nnz += 1
            if v < 0:
                f |= sbit
        acc |= f << np.uint64(nacc)
        nacc += width
        if nacc >= 32:
            pos, acc, nacc = _flush(out, pos, acc, nacc)
    _finish(out, pos, acc, nacc)
    return nnz


@njit
def dither_values(buf, unit, block, s, width, out):
    """Decode signed-level fields: out[j] = ±level·unit[block]; returns −1 or the first bad j."""
    d = out.size
    acc = np.uint64(0)
    nacc = 0
    pos = 0
    mask = (np.uint64(1) << np.uint64(width - 1)) - U1
    sbit = np.uint64(1) << np.uint64(width - 1)
    for j in range(d):
        while nacc < width:
            acc |= np.uint64(buf[pos]) << np.uint64(nacc)
            pos += 1
            nacc += 8
        f = acc & (mask | sbit)
        acc >>= np.uint64(width)
        nacc -= width
        lev = f & mask
        if lev > np.uint64(s) or (lev == 0 and (f & sbit) != 0):
            return j
        val = np.float64(lev) * unit[j // block]
        out[j] = -val if (f & sbit) != 0 else val
    return -1


# --- natural compression ---------------------------------------------------------------------
@njit
def natural_pack32(bits, key, out):
    """C_nat of float32 bit patterns: fields ``sign << 8 | exponent'`` (9 bits).

    Rounds the exponent up with probability mantissa/2²³ (the top 23 bits of the word decide,
    so the probability is exact). Returns the index of an overflow to exponent 255, or −1.
    """
    d = bits.size
    acc = np.uint64(0)
    nacc = 0
    pos = 0
    h = np.uint64(0)
    for j in range(d):
        if (j & 1) == 0:
            h = splitmix(key, j >> 1)
            w = h & LOW32
        else:
            w = h >> np.uint64(32)
        b = np.uint64(bits[j])
        e = (b >> np.uint64(23)) & np.uint64(0xFF)
        m = b & np.uint64(0x7FFFFF)
        if (w >> np.uint64(9)) < m:
            e += U1
        if e == np.uint64(0xFF):
            return j
        acc |= (((b >> np.uint64(31)) << np.uint64(8)) | e) << np.uint64(nacc)
        nacc += 9
        if nacc >= 32:
            pos, acc, nacc = _flush(out, pos, acc, nacc)
    _finish(out, pos, acc, nacc)
    return -1


@njit
def natural_unpack32(buf, out_bits):
    """Inverse of `natural_pack32` into float32 bit patterns; returns −1 or the first bad j."""
    d = out_bits.size
    acc = np.uint64(0)
    nacc = 0
    pos = 0
    for j in range(d):
        while nacc < 9:
            acc |= np.uint64(buf[pos]) << np.uint64(nacc)
            pos += 1
            nacc += 8
        f = acc & np.uint64(0x1FF)
        acc >>= np.uint64(9)
        nacc -= 9
        e = f & np.uint64(0xFF)
        if e == np.uint64(0xFF):
            return j
        out_bits[j] = np.uint32(((f >> np.uint64(8)) << np.uint64(31)) | (e << np.uint64(23)))
    return -1


# --- natural dithering -----------------------------------------------------------------------
@njit
def natural_dither_levels(x, inv_norm, block, s, key, width, out):
    """Level index L ∈ {0…s} (value 2^(L−s), 0 for L = 0) with unbiased rounding, plus sign."""
    d = x.size
    acc = np.uint64(0)
    nacc = 0
    pos = 0
    h = np.uint64(0)
    sbit = np.uint64(1) << np.uint64(width - 1)
    bottom = 2.0 ** (s - 1)  # 1 / 2^(1−s)
    for j in range(d):
        if (j & 1) == 0:
            h = splitmix(key, j >> 1)
            w = h & LOW32
        else:
            w = h >> np.uint64(32)
        v = np.float64(x[j])
        y = min(abs(v) * inv_norm[j // block], 1.0)
        lev = 0
        if y > 0.0:
            m, ex = math.frexp(y)  # y = m·2^ex, m ∈ [0.5, 1)
            lev = ex - 1 + s
            if lev >= 1:
                prob = 2.0 * m - 1.0
            else:
                lev = 0
                prob = y * bottom
            if np.float64(w) < prob * 4294967296.0:
                lev += 1
        f = np.uint64(lev)
        if lev > 0 and v < 0:
            f |= sbit
        acc |= f << np.uint64(nacc)
        nacc += width
        if nacc >= 32:
            pos, acc, nacc = _flush(out, pos, acc, nacc)
    _finish(out, pos, acc, nacc)


@njit
def natural_dither_values(buf, norm, block, s, width, out):
    """Decode natural-dithering fields: ±2^(L−s)·norm[block]; returns −1 or the first bad j."""
    d = out.size
    acc = np.uint64(0)
    nacc = 0
    pos = 0
    mask = (np.uint64(1) << np.uint64(width - 1)) - U1
    sbit = np.uint64(1) << np.uint64(width - 1)
    for j in range(d):
        while nacc < width:
            acc |= np.uint64(buf[pos]) << np.uint64(nacc)
            pos += 1
            nacc += 8
        f = acc & (mask | sbit)
        acc >>= np.uint64(width)
        nacc -= width
        lev = int(f & mask)
        if lev > s or (lev == 0 and (f & sbit) != 0):
            return j
        val = 0.0 if lev == 0 else math.ldexp(norm[j // block], lev - s)
        out[j] = -val if (f & sbit) != 0 else val
    return -1


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


# --- Elias-γ coding --------------------------------------------------------------------------
@njit
def elias_gamma_bits(n):
    """Length of the Elias-γ code of n ≥ 1: 2⌊log₂n⌋ + 1."""
    nb = 0
    while (n >> nb) > 1:
        nb += 1
    return 2 * nb + 1


@njit
def write_gamma(out, pos, n):
    """Write γ(n) MSB first at stream bit ``pos`` (``out`` zero-filled); return the new pos."""
    nb = 0
    while (n >> nb) > 1:
        nb += 1
    pos += nb  # nb leading zeros
    for k in range(nb, -1, -1):
        if (n >> k) & 1:
            out[pos >> 3] |= np.uint8(1 << (pos & 7))
        pos += 1
    return pos


@njit
def read_gamma(buf, pos, limit):
    """Read one γ code at ``pos``; return (value, new pos), or (0, −1) if it runs past limit."""
    nb = 0
    while pos < limit and ((buf[pos >> 3] >> (pos & 7)) & 1) == 0:
        nb += 1
        pos += 1
    if pos + nb >= limit or nb > 62:
        return 0, -1
    n = 0
    for _ in range(nb + 1):
        n = (n << 1) | ((buf[pos >> 3] >> (pos & 7)) & 1)
        pos += 1
    return n, pos


@njit
def elias_levels_encode(levels, negative, out):
    """QSGD's Elias stream: per non-zero level γ(gap), sign bit, γ(level); returns bits."""
    pos = 0
    prev = -1
    for j in range(levels.size):
        lev = levels[j]
        if lev != 0:
            pos = write_gamma(out, pos, j - prev)
            if negative[j]:
                out[pos >> 3] |= np.uint8(1 << (pos & 7))
            pos += 1
            pos = write_gamma(out, pos, lev)
            prev = j
    return pos


@njit
def elias_levels_bits(levels):
    """Exact bit length of `elias_levels_encode` for these levels."""
    bits = 0
    prev = -1
    for j in range(levels.size):
        if levels[j] != 0:
            bits += elias_gamma_bits(j - prev) + 1 + elias_gamma_bits(levels[j])
            prev = j
    return bits


@njit
def elias_levels_decode(buf, nnz, limit, s, levels, negative):
    """Decode ``nnz`` Elias entries into levels/negative; return bits read or −1 if malformed."""
    pos = 0
    prev = -1
    d = levels.size
    for _ in range(nnz):
        gap, pos = read_gamma(buf, pos, limit)
        if pos < 0 or prev + gap >= d:
            return -1
        j = prev + gap
        if pos >= limit:
            return -1
        negative[j] = (buf[pos >> 3] >> (pos & 7)) & 1
        pos += 1
        lev, pos = read_gamma(buf, pos, limit)
        if pos < 0 or lev > s:
            return -1
        levels[j] = lev
        prev = j
    return pos
