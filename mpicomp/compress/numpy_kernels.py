"""The NumPy twins of the compiled kernels: the reference, and the path without Numba.

Each entry point takes the arguments of its namesake in `numba_kernels` and writes the same
bytes and values (the tests compare the two paths); `kernels.backend` chooses between them.
Bit layout and random words are those of `bitpack` and `counter_rng`.
"""

from __future__ import annotations

import numpy as np

from .counter_rng import INV_2_32, uniforms, words32, words64

#: field widths that are whole bytes: a cast, on either path
BYTE_WIDTHS = (8, 16, 32)


def _per_block(values: np.ndarray, block: int, d: int) -> np.ndarray:
    """One value per block expanded to one per coordinate (as `blockwise.per_element`)."""
    return np.repeat(values, block)[:d]


def _float_layout(dtype) -> tuple[np.dtype, int, int]:
    """(unsigned view, exponent bits, mantissa bits) of float32 or float64."""
    info = np.finfo(dtype)
    return np.dtype(f"u{np.dtype(dtype).itemsize}"), int(info.nexp), int(info.nmant)


# --- checks and copies -----------------------------------------------------------------------
def all_finite(x: np.ndarray) -> bool:
    """True if no entry of ``x`` is NaN or ±Inf."""
    return bool(np.isfinite(x).all())


def copy_finite(body: np.ndarray, out: np.ndarray) -> bool:
    """``out[:] =`` the little-endian values in the bytes ``body``; True if none is NaN/±Inf."""
    out[...] = body.view(out.dtype.newbyteorder("<"))
    return all_finite(out)


def norms(x: np.ndarray, block: int, p: float) -> np.ndarray:
    """‖x_B‖_p per block of length ``block`` in float64 (p ∈ {1, 2, inf})."""
    nb = -(-x.size // block)
    padded = np.zeros(nb * block, dtype=np.float64)
    padded[: x.size] = np.abs(x)
    rows = padded.reshape(nb, block)
    if p == 2:
        return np.sqrt(np.einsum("ij,ij->i", rows, rows))
    if p == 1:
        return rows.sum(axis=1)
    return rows.max(axis=1)


# --- field packing ---------------------------------------------------------------------------
def pack_fields(values: np.ndarray, width: int) -> np.ndarray:
    """Unsigned integers (each ``< 2**width``) packed flat into a ``uint8`` array."""
    v = np.asarray(values)
    n = v.size
    if width == 8:
        return v.astype(np.uint8)
    if width in (16, 32):
        return v.astype(f"<u{width // 8}").view(np.uint8)
    if width == 1:
        return np.packbits(v.astype(bool), bitorder="little")
    if width in (2, 4):
        per = 8 // width
        padded = np.zeros(-(-n // per) * per, dtype=np.uint8)
        padded[:n] = v
        lanes = padded.reshape(-1, per)
        out = np.zeros(lanes.shape[0], dtype=np.uint8)
        for k in range(per):
            out |= lanes[:, k] << np.uint8(k * width)
        return out
    shifts = np.arange(width, dtype=np.uint32)
    bits = ((v.astype(np.uint32)[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bits.ravel(), bitorder="little")


def unpack_fields(buf: np.ndarray, width: int, n: int) -> np.ndarray:
    """``n`` fields from bit 0 of ``buf`` (which holds them all), as ``uint32`` (``uint8`` for
    width ≤ 8)."""
    buf = buf[: -(-n * width // 8)]
    if width == 8:
        return buf.copy()
    if width in (16, 32):
        return buf.view(f"<u{width // 8}").astype(np.uint32)
    if width == 1:
        return np.unpackbits(buf, count=n, bitorder="little")
    if width in (2, 4):
        per = 8 // width
        mask = np.uint8((1 << width) - 1)
        lanes = np.empty((buf.size, per), dtype=np.uint8)
        for k in range(per):
            lanes[:, k] = (buf >> np.uint8(k * width)) & mask
        return lanes.ravel()[:n]
    bits = np.unpackbits(buf, count=n * width, bitorder="little").reshape(n, width)
    weights = np.uint32(1) << np.arange(width, dtype=np.uint32)
    out = bits.astype(np.uint32) @ weights if n else np.zeros(0, np.uint32)
    return out.astype(np.uint32)


# --- signs -----------------------------------------------------------------------------------
def sign_pack(x: np.ndarray, out: np.ndarray) -> bool:
    """Bit j of ``out`` = 1 where x[j] < 0; returns False if x has NaN/Inf."""
    out[:] = np.packbits(x < 0, bitorder="little")
    return all_finite(x)


def sign_unpack(buf, scales, block, out, accumulate=False) -> None:
    """out[j] = scales[block of j] · (−1 if bit j else +1) (``accumulate``: out[j] += …)."""
    d = out.size
    negative = np.unpackbits(buf, count=d, bitorder="little").astype(bool)
    mag = _per_block(scales, block, d)
    values = np.where(negative, -mag, mag)
    if accumulate:
        out += values
    else:
        out[:] = values


# --- dithering -------------------------------------------------------------------------------
def clip_bounds(x, block, clip) -> np.ndarray:
    """TernGrad's clip ``clip·σ_B`` per block (float64, σ_B = ``np.std(x_B, dtype=float64)``)."""
    nb = -(-x.size // block)
    return clip * np.array([np.std(x[b * block : (b + 1) * block], dtype=np.float64)
                            for b in range(nb)])


def dither_levels(x, scale, block, s, key, width, out, bound=None) -> None:
    """Signed-level fields ``level | sign << (width − 1)`` of random dithering into ``out``:
    ``level = min(⌊|x_j|·scale[block] + u_j⌋, s)``, the sign bit only on non-zero levels; with
    ``bound`` (TernGrad's clip per block) of ``np.clip(x, −bound, bound).astype(x.dtype)``."""
    if bound is not None:
        limit = _per_block(bound, block, x.size)
        x = np.clip(x, -limit, limit).astype(x.dtype)
    t = np.abs(x).astype(np.float64) * _per_block(scale, block, x.size)
    lev = np.minimum((t + words32(key, x.size) * INV_2_32).astype(np.int64), s)
    negative = (x < 0) & (lev > 0)
    out[:] = pack_fields(lev.astype(np.uint32) | (negative.astype(np.uint32) << (width - 1)), width)


def _level_table(s: int, pow2: bool) -> np.ndarray:
    """f(ℓ) for ℓ = 0 … s: ℓ, or 2^(ℓ−s) with f(0) = 0 (``pow2``, natural dithering)."""
    if pow2:
        return np.concatenate([[0.0], 2.0 ** np.arange(1 - s, 1)])
    return np.arange(s + 1, dtype=np.float64)


def signed_level_values(buf, norm, block, s, width, pow2, out, accumulate=False, round32=False):
    """out[j] = ±f(level)·norm[block of j] of signed-level fields (f of `_level_table`); with
    ``accumulate`` added to the float64 ``out``, rounded to float32 first when ``round32``.
    Returns −1 or the first coordinate whose field is impossible (a level above s, or a sign
    bit on level 0)."""
    d = out.size
    f = unpack_fields(buf, width, d).astype(np.int64)
    lev = f & ((1 << (width - 1)) - 1)
    negative = (f >> (width - 1)).astype(bool)
    invalid = (lev > s) | (negative & (lev == 0))
    val = _level_table(s, pow2)[np.minimum(lev, s)] * _per_block(norm, block, d)
    val = np.where(negative, -val, val)
    if accumulate:
        out += val.astype(np.float32) if round32 else val
    else:
        out[:] = val
    return int(np.argmax(invalid)) if invalid.any() else -1


def natural_dither_levels(x, inv_norm, block, s, key, width, out) -> None:
    """Natural dithering's fields: level L ∈ {0…s} (value 2^(L−s), 0 for L = 0), rounded
    without bias (between 2^(L−s) and 2^(L+1−s) with probability mantissa / 2⁵²), plus sign."""
    d = x.size
    y = np.minimum(np.abs(x).astype(np.float64) * _per_block(inv_norm, block, d), 1.0)
    yb = y.view(np.uint64)
    lev = (yb >> np.uint64(52)).astype(np.int64) - 1023 + s
    w = words32(key, d).astype(np.uint64)
    up_top = (w << np.uint64(20)) < (yb & np.uint64((1 << 52) - 1))
    up_bottom = w * INV_2_32 < y * 2.0 ** (s - 1)
    lev = np.where(lev >= 1, lev + up_top, up_bottom).astype(np.uint32)
    negative = (x < 0) & (lev > 0)
    out[:] = pack_fields(lev | (negative.astype(np.uint32) << (width - 1)), width)


def symbol_values(sym, unit, block, out) -> None:
    """``out[j] = ±ℓ·unit[j // block]`` for the signed level of symbol ``sym[j]`` (`coding`:
    0 the zero level, ``2ℓ − 1`` the level +ℓ, ``2ℓ`` the level −ℓ)."""
    sym = sym.astype(np.int64)
    val = (sym + 1) // 2 * _per_block(unit, block, sym.size)
    out[:] = np.where((sym > 0) & (sym % 2 == 0), -val, val)


# --- half-precision casts --------------------------------------------------------------------
FP16_MAX = float(np.finfo(np.float16).max)
BF16_EXPONENT = 0x7F80


def fp16_pack(x, out) -> bool:
    """float16 patterns of ``x`` into the bytes ``out``; False if some |x_j| > 65504 or is
    NaN/Inf."""
    if x.size and not np.abs(x).max() <= FP16_MAX:
        return False
    out.view("<f2")[:] = x
    return True


def fp16_unpack(body, out) -> int:
    """``out`` = the float16 values in the bytes ``body``; −1 or the first NaN/Inf coordinate."""
    half = body.view("<f2")
    finite = np.isfinite(half)
    if not finite.all():
        return int(np.argmin(finite))
    out[:] = half
    return -1


def bf16_pack(x, out) -> bool:
    """bfloat16 patterns of ``x`` into the bytes ``out``; False if a value is NaN/Inf or
    rounds past the largest finite bfloat16."""
    with np.errstate(over="ignore", invalid="ignore"):
        bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
    out.view("<u2")[:] = rounded
    return all_finite(x) and not ((rounded & BF16_EXPONENT) == BF16_EXPONENT).any()


def bf16_unpack(body, out) -> int:
    """``out`` = the bfloat16 values in the bytes ``body``; −1 or the first NaN/Inf
    coordinate."""
    values = (body.view("<u2").astype(np.uint32) << 16).view(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        return int(np.argmin(finite))
    out[:] = values
    return -1


# --- natural compression ---------------------------------------------------------------------
def natural_fields(x: np.ndarray, key) -> tuple[np.ndarray, int]:
    """C_nat's fields ``sign << e | exponent'`` (``1 + e`` bits, e exponent bits) of a float32
    or float64 ``x``: the exponent rounds up with probability mantissa / 2^M, decided by the top
    M bits of the coordinate's word. Returns (fields, the first index that is NaN/Inf or would
    round up to the all-ones exponent, or −1)."""
    utype, ebits, mbits = _float_layout(x.dtype)
    bits = x.view(utype)
    top = (1 << ebits) - 1
    e = (bits >> utype.type(mbits)) & utype.type(top)
    m = bits & utype.type((1 << mbits) - 1)
    if x.dtype == np.float32:
        up = (words32(key, x.size) >> np.uint32(32 - mbits)) < m
    else:
        up = (words64(key, x.size) >> np.uint64(64 - mbits)) < m
    e = e + up.astype(utype)
    over = e >= top
    sign = bits >> utype.type(8 * x.itemsize - 1)
    fields = ((sign << utype.type(ebits)) | e).astype(np.uint32)
    return fields, int(np.argmax(over)) if over.any() else -1


def natural_values(fields: np.ndarray, out: np.ndarray) -> int:
    """Inverse of `natural_fields` into the float32/float64 ``out``; −1 or the first coordinate
    whose exponent field is all ones (no value of C_nat: a corrupted buffer)."""
    utype, ebits, mbits = _float_layout(out.dtype)
    f = fields.astype(utype)
    e = f & utype.type((1 << ebits) - 1)
    over = e == (1 << ebits) - 1
    sign = (f >> utype.type(ebits)) << utype.type(8 * out.itemsize - 1)
    out.view(utype)[:] = sign | (e << utype.type(mbits))
    return int(np.argmax(over)) if over.any() else -1


def natural_pack(x, key, out) -> int:
    """`natural_fields` of ``x`` packed into ``out``; returns its bad index or −1."""
    fields, bad = natural_fields(x, key)
    out[:] = pack_fields(fields, 1 + _float_layout(x.dtype)[1])
    return bad


def natural_unpack(buf, out) -> int:
    """C_nat values of the packed fields ``buf`` into ``out``; −1 or the first bad coordinate."""
    return natural_values(unpack_fields(buf, 1 + _float_layout(out.dtype)[1], out.size), out)


def natural_add32(buf, acc) -> int:
    """acc[j] += the C_nat value of coordinate j (float32 payload); −1 or the first bad j."""
    values = np.empty(acc.size, dtype=np.float32)
    bad = natural_unpack(buf, values)
    if bad < 0:
        acc += values
    return bad


# --- uniform grid ----------------------------------------------------------------------------
def block_extremes(x, block, lo, hi) -> None:
    """Per block, the minimum and maximum of ``x`` (as float64) into ``lo`` and ``hi``."""
    padded = np.empty(lo.size * block, dtype=np.float64)
    padded[: x.size] = x
    padded[x.size :] = x[-1] if x.size else 0.0  # a repeated value moves no minimum or maximum
    rows = padded.reshape(lo.size, block)
    lo[:] = rows.min(axis=1)
    hi[:] = rows.max(axis=1)


def uniform_levels(x, lo, hi, block, top, key, stochastic, width, out) -> None:
    """Grid levels ``min(⌊(x_j − lo)·(top/(hi − lo)) + u_j⌋, top)`` packed into ``out`` (u_j
    the counter-based uniform when ``stochastic``, else 0.5; level 0 on a constant block)."""
    with np.errstate(divide="ignore", over="ignore"):  # constant blocks: scale 0, level 0
        scale = top / (hi - lo)
    scale[~np.isfinite(scale)] = 0.0  # also a range below top/1.8e308: every level is lo
    t = (x - _per_block(lo, block, x.size)) * _per_block(scale, block, x.size)
    shift = uniforms(key, x.size) if stochastic else 0.5
    out[:] = pack_fields(np.clip(np.floor(t + shift), 0, top).astype(np.uint32), width)


def uniform_values(buf, lo, hi, block, top, width, out) -> None:
    """``out[j] = lo·(1 − f) + hi·f`` with ``f = level_j/top`` of the block of j."""
    d = out.size
    fraction = unpack_fields(buf, width, d) / top  # k-bit fields: at most 1
    # lo·(1 − f) + hi·f: both ends come back exactly, also in float64
    out[:] = _per_block(lo, block, d) * (1.0 - fraction) + _per_block(hi, block, d) * fraction


# --- top-k candidate filter ------------------------------------------------------------------
def indices_at_least(x, threshold, out) -> int:
    """Write the indices j with |x_j| ≥ threshold into ``out``; return their count (capped)."""
    idx = np.flatnonzero(np.abs(x) >= threshold)
    kept = min(idx.size, out.size)
    out[:kept] = idx[:kept]
    return int(idx.size)
