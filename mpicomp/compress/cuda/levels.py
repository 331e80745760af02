"""GPU codecs of the level operators: `Dither`, `QSGD`, `TernGrad` and `NaturalDither` with
dense signed-level fields, and `Uniform`'s k-bit grid.

Bodies, as the CPU writes them (`dithering`, `level_coders.DenseCoder`, `uniform`):

- dithering: the block norms ν (``x``'s dtype, little endian, rounded up), then one
  ``width``-bit field ``level | sign << (width − 1)`` per coordinate;
- uniform: per block its lowest and highest value (``x``'s dtype, interleaved), then one
  ``bits``-bit grid level per coordinate.

An encode kernel runs one thread per body byte: a byte of the block scalars, or a byte of the
packed fields, each computed inline from ``x``, the coordinate's random word and its block's
scalars, with the CPU kernel's float64 arithmetic step for step (`reduce.mul_rn`/`add_rn`: no
FMA). A decode kernel runs one thread per coordinate and reads its block's scalars from the
body bytes. Rejections go to ``status`` (`mpicomp.compress.cuda`); when a block's norm is not
finite because its input is, both ``NON_FINITE`` and ``REJECTED`` are set and the caller reports
``NON_FINITE`` first, as the CPU does.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64, int64, uint8, uint32, uint64

from ...backend import get_xp
from .. import blockwise
from ..base import n_blocks
from ..counter_rng import INV_2_32
from ..dithering import QSGD, Dither, NaturalDither, TernGrad
from ..level_coders import DenseCoder
from ..uniform import Uniform
from . import NON_FINITE, REJECTED, launch
from .bits import (
    add_rn,
    field_span,
    float32_bits,
    float32_from_bits,
    float64_bits,
    float64_from_bits,
    mul_rn,
    packed_bytes,
    place,
    read_field,
    word32,
)
from .codec import DeviceCodec, register
from .reduce import block_extremes, block_norms, clip_bounds, clipped, round_up

MANT52 = uint64((1 << 52) - 1)


# --- scalars in the body ------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def value_byte(value, r, itemsize):
    """Byte ``r`` of the little-endian bit pattern of ``value`` as a float of ``itemsize``
    bytes (4 or 8)."""
    if itemsize == 4:
        bits = uint64(float32_bits(value))
    else:
        bits = float64_bits(value)
    return uint8((bits >> uint64(8 * r)) & uint64(0xFF))


@cuda.jit(device=True, inline=True)
def read_scalar(body, k, itemsize):
    """The ``k``-th little-endian float of ``itemsize`` bytes at the start of ``body``, as
    float64 (read byte by byte: no alignment needed)."""
    bits = uint64(0)
    for r in range(itemsize):
        bits |= uint64(body[k * itemsize + r]) << uint64(8 * r)
    if itemsize == 4:
        return float64(float32_from_bits(uint32(bits)))
    return float64_from_bits(bits)


@cuda.jit(device=True, inline=True)
def check_input(x, j, status):
    """``status[NON_FINITE]`` ← ``j`` if ``x[j]`` is NaN/Inf."""
    if not math.isfinite(x[j]):
        cuda.atomic.min(status, NON_FINITE, j)


@cuda.jit(device=True, inline=True)
def padding_clean(section, n, width):
    """Whether the bits after the ``n`` fields of ``width`` bits in their last byte are zero."""
    nbits = n * width
    if nbits % 8 == 0:
        return True
    return (section[nbits // 8] >> (nbits % 8)) == 0


@cuda.jit(device=True, inline=True)
def put(out, j, value, accumulate, round32):
    """``out[j] = value`` (cast to ``out``'s dtype), or with ``accumulate`` ``out[j] +=`` the
    value rounded to float32 first when ``round32`` (the payload's dtype)."""
    if accumulate:
        out[j] += float64(float32(value)) if round32 else value
    else:
        out[j] = value


# --- dithering ---------------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def dither_field(v, scale, s, word, sign_bit):
    """Signed-level field of ``v``: ``ℓ = min(⌊|v|·scale + u⌋, s)``, ``u = word·2⁻³²``, the sign
    bit only on ℓ > 0 (`numba_kernels.dither_levels`)."""
    t = mul_rn(abs(v), scale)
    level = min(int64(add_rn(t, float64(word) * INV_2_32)), s)
    if level > 0 and v < 0:
        return uint32(level) | sign_bit
    return uint32(level)


@cuda.jit(device=True, inline=True)
def natural_field(v, inv, s, word, sign_bit):
    """Natural dithering's field of ``v``: level L of ``y = min(|v|·inv, 1)`` between
    2^(L−s) and 2^(L+1−s), rounded up with probability mantissa/2⁵² (the word decides by an
    integer comparison), below 2^(1−s) up to L = 1 with probability y·2^(s−1)
    (`numba_kernels.natural_dither_levels`)."""
    a = abs(v) * inv
    y = 1.0 if 1.0 < a else a
    y_bits = float64_bits(y)
    level = int64(y_bits >> uint64(52)) - 1023 + s
    w = uint64(word)
    if level >= 1:
        if (w << uint64(20)) < (y_bits & MANT52):
            level += 1
    else:
        bottom = float64_from_bits(uint64(s - 1 + 1023) << uint64(52))  # 2^(s−1), exact
        level = int64(float64(word) * INV_2_32 < y * bottom)
    if level > 0 and v < 0:
        return uint32(level) | sign_bit
    return uint32(level)


@cuda.jit(cache=True)
def _encode_levels(x, nu, clipping, bound, bound_cast, block, s, natural, key, width, body,
                   status):
    """One body byte of a dithering payload: a byte of the norms ``nu``, or of the packed
    signed-level fields (dithering, or natural dithering when ``natural``; TernGrad's clip to
    ``±bound`` first when ``clipping``). NaN/Inf input → ``NON_FINITE``; a norm that is not
    finite (overflow) → ``REJECTED`` at its block's first coordinate."""
    i = cuda.grid(1)
    if i >= body.size:
        return
    itemsize = nu.itemsize
    head = nu.size * itemsize
    if i < head:
        body[i] = value_byte(nu[i // itemsize], i % itemsize, itemsize)
        return
    k = i - head
    d = x.size
    sign_bit = uint32(1) << uint32(width - 1)
    lo, hi = field_span(k, width, d)
    byte = uint8(0)
    for j in range(lo, hi):
        b = j // block
        norm = float64(nu[b])
        check_input(x, j, status)
        if j == b * block and not math.isfinite(norm):
            cuda.atomic.min(status, REJECTED, j)
        v = float64(x[j])
        if clipping:
            v = clipped(v, bound[b], float64(bound_cast[b]))
        if natural:
            inv = 1.0 / norm if norm > 0 else 0.0
            field = natural_field(v, inv, s, word32(key, j), sign_bit)
        else:
            scale = s / norm if norm > 0 else 0.0
            field = dither_field(v, scale, s, word32(key, j), sign_bit)
        byte |= place(field, j, width, k)
    body[i] = byte


@cuda.jit(cache=True)
def _decode_levels(body, blocks, itemsize, block, s, width, natural, out, accumulate, round32,
                   status):
    """``out[j]`` (``+=`` when ``accumulate``) = ``±f(ℓ)·unit`` of coordinate j's field, f(ℓ) = ℓ
    and unit = ν/s, or f(ℓ) = 2^(ℓ−s) (f(0) = 0) and unit = ν when ``natural``
    (`numba_kernels.signed_level_values`). ``REJECTED`` at: a level above s or a sign bit on
    level 0 (that coordinate), a norm that is negative or not finite (its block's first
    coordinate), padding bits that are not zero (the last coordinate)."""
    j = cuda.grid(1)
    d = out.size
    if j >= d:
        return
    section = body[blocks * itemsize :]
    b = j // block
    norm = read_scalar(body, b, itemsize)
    if j == b * block and not (math.isfinite(norm) and norm >= 0):
        cuda.atomic.min(status, REJECTED, j)
    if j == d - 1 and not padding_clean(section, d, width):
        cuda.atomic.min(status, REJECTED, j)
    field = read_field(section, j, width)
    shift = uint32(width - 1)
    level = field & ((uint32(1) << shift) - uint32(1))
    negative = (field >> shift) != 0
    if level > s or (level == 0 and negative):
        cuda.atomic.min(status, REJECTED, j)
    level = min(level, uint32(s))
    if natural:  # 2^(ℓ−s) from its exponent bits
        factor = float64_from_bits(uint64(level + 1023 - s) << uint64(52)) if level > 0 else 0.0
        unit = norm
    else:
        factor = float64(level)
        unit = norm / s
    value = mul_rn(factor, unit)
    put(out, j, -value if negative else value, accumulate, round32)


@register(Dither, QSGD, TernGrad)
class DitherCodec(DeviceCodec):
    """Random dithering, QSGD and TernGrad (TernGrad's clip included) with the dense coder."""

    #: natural dithering's power-of-two levels (`NaturalDitherCodec`)
    natural = False

    def supports(self, op) -> bool:
        """Dense signed-level fields only (not Elias/Golomb streams, not TernGrad's trits)."""
        coder = op.level_coder
        return type(coder) is DenseCoder and coder.pow2 == self.natural

    @staticmethod
    def _clip(op) -> float:
        return getattr(op, "clip", 0.0) or 0.0

    def scales(self, op, x) -> tuple:
        """``(ν,)`` — ``(ν, bound, bound_cast)`` for a clipping TernGrad: the block norms as
        sent (float64 norms rounded up to ``x``'s dtype; inf where they overflow it), of the
        vector clipped to ``±bound`` (``clip·σ_B`` in float64; ``bound_cast`` in the dtype)."""
        xp = get_xp(x)
        block = blockwise.effective_block(x.size, op.block)
        clip = None
        if self._clip(op) and x.size:
            clip = clip_bounds(x, block, self._clip(op), xp)
        nu = round_up(block_norms(x, block, op.p, xp, clip), x.dtype, xp)
        return (nu,) if clip is None else (nu, *clip)

    def host_scales(self, op, x: np.ndarray) -> tuple:
        """`scales` computed as the CPU's ``encode_body`` does, from the host vector ``x``
        (NumPy arrays; the norms are inf where the CPU raises ValueError)."""
        block = blockwise.effective_block(x.size, op.block)
        clip = None
        if self._clip(op) and x.size:
            sigma = np.array([np.std(x[b * block : (b + 1) * block], dtype=np.float64)
                              for b in range(-(-x.size // block))])
            bound = self._clip(op) * sigma
            with np.errstate(over="ignore"):
                clip = (bound, bound.astype(x.dtype))
            x = op._prepare(x)[0]  # the clipped vector, exactly as the CPU makes it
        nu = _round_up_host(blockwise.norms(x, block, op.p), x.dtype)
        return (nu,) if clip is None else (nu, *clip)

    def encode(self, op, x, key: int, scales, body, status) -> bytes:
        """Write ν, then the packed signed-level fields (``extra`` is empty: dense coder)."""
        d = x.size
        block = blockwise.effective_block(d, op.block)
        width = op.level_coder.width
        _check_body(body, n_blocks(d, op.block) * x.itemsize + packed_bytes(d, width))
        nu = scales[0]
        clipping = len(scales) == 3
        # without a clip the bounds are not read: stand-ins of the types the kernel takes
        bound, bound_cast = scales[1:] if clipping else (get_xp(x).empty(0, np.float64), nu)
        launch(_encode_levels, body.size, x, nu, clipping, bound, bound_cast, block, op.s,
               self.natural, np.uint64(key), width, body, status)
        return b""

    def decode(self, op, extra: bytes, body, d: int, dtype, out, accumulate: bool,
               status) -> None:
        """``out[:] =`` (``+=`` when ``accumulate``) the values of the body's fields."""
        dtype = np.dtype(dtype)
        launch(_decode_levels, d, body, n_blocks(d, op.block), dtype.itemsize,
               blockwise.effective_block(d, op.block), op.s, op.level_coder.width, self.natural,
               out, accumulate, accumulate and dtype == np.float32, status)


@register(NaturalDither)
class NaturalDitherCodec(DitherCodec):
    """Natural dithering: levels 2^(L−s)·ν, dense fields."""

    natural = True


def _round_up_host(values: np.ndarray, dtype) -> np.ndarray:
    """`blockwise.round_up` without its ValueError: a value above the dtype's range is inf."""
    with np.errstate(over="ignore"):
        cast = values.astype(dtype)
    low = cast < values
    cast[low] = np.nextafter(cast[low], np.dtype(dtype).type(np.inf))
    return cast


def _check_body(body, size: int) -> None:
    """ValueError unless the device ``body`` has ``size`` bytes (metadata only, no sync)."""
    if body.size != size:
        raise ValueError(f"body has {body.size} bytes, the payload needs {size}")


# --- uniform grid ------------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def grid_field(v, low, high, top, stochastic, word):
    """Grid level ``min(max(⌊t⌋, 0), top)``, ``t = (v − lo)·(top/(hi − lo)) + u``, ``u`` the
    word's uniform when ``stochastic``, else ½; scale 0 on a constant block or where
    ``top/(hi − lo)`` overflows; level 0 where t is NaN (``hi − lo`` overflows float64), as the
    CPU's conversion gives it (`numba_kernels.uniform_levels`)."""
    span = high - low
    ceiling = float64(top)
    scale = ceiling / span if span > 0 else 0.0
    if not math.isfinite(scale):
        scale = 0.0
    shift = float64(word) * INV_2_32 if stochastic else 0.5
    t = add_rn(mul_rn(v - low, scale), shift)
    if not t >= 1.0:  # ⌊t⌋ ≤ 0, or NaN
        return uint32(0)
    if t >= ceiling:
        return uint32(top)
    return uint32(t)  # truncation is ⌊t⌋ here


@cuda.jit(cache=True)
def _encode_uniform(x, lo, hi, block, top, stochastic, key, width, body, status):
    """One body byte of a uniform payload: a byte of the interleaved block ends ``lo``/``hi``
    (float64, sent in ``x``'s dtype), or of the packed grid levels. NaN/Inf input →
    ``NON_FINITE``."""
    i = cuda.grid(1)
    if i >= body.size:
        return
    itemsize = x.itemsize
    head = 2 * lo.size * itemsize
    if i < head:
        k = i // itemsize
        end = hi[k // 2] if k % 2 else lo[k // 2]
        body[i] = value_byte(end, i % itemsize, itemsize)
        return
    k = i - head
    lo_field, hi_field = field_span(k, width, x.size)
    byte = uint8(0)
    for j in range(lo_field, hi_field):
        b = j // block
        check_input(x, j, status)
        word = word32(key, j) if stochastic else uint32(0)
        field = grid_field(float64(x[j]), lo[b], hi[b], top, stochastic, word)
        byte |= place(field, j, width, k)
    body[i] = byte


@cuda.jit(cache=True)
def _decode_uniform(body, blocks, itemsize, block, top, width, out, accumulate, round32, status):
    """``out[j]`` (``+=`` when ``accumulate``) = ``lo·(1 − f) + hi·f``, ``f = level/top``
    (`numba_kernels.uniform_values`). ``REJECTED`` at: block ends that are not finite or not
    ordered (the block's first coordinate), padding bits that are not zero (the last one)."""
    j = cuda.grid(1)
    d = out.size
    if j >= d:
        return
    section = body[2 * blocks * itemsize :]
    b = j // block
    low = read_scalar(body, 2 * b, itemsize)
    high = read_scalar(body, 2 * b + 1, itemsize)
    if j == b * block and not (math.isfinite(low) and math.isfinite(high) and low <= high):
        cuda.atomic.min(status, REJECTED, j)
    if j == d - 1 and not padding_clean(section, d, width):
        cuda.atomic.min(status, REJECTED, j)
    f = float64(read_field(section, j, width)) / float64(top)
    put(out, j, add_rn(mul_rn(low, 1.0 - f), mul_rn(high, f)), accumulate, round32)


@register(Uniform)
class UniformCodec(DeviceCodec):
    """`Uniform`, both roundings."""

    def supports(self, op) -> bool:
        return True

    def scales(self, op, x) -> tuple:
        """``(lo, hi)``: each block's minimum and maximum, float64 (sent in ``x``'s dtype,
        exactly: they are elements of ``x``)."""
        return block_extremes(x, blockwise.effective_block(x.size, op.block), get_xp(x))

    def host_scales(self, op, x: np.ndarray) -> tuple:
        """`scales` as the CPU's ``Uniform.grid`` finds them (NumPy arrays)."""
        _, lo, hi = op.grid(x)
        return lo, hi

    def encode(self, op, x, key: int, scales, body, status) -> bytes:
        """Write the block ends, then the packed grid levels (``extra`` is empty). ``key`` is
        ignored with rounding ``nearest`` (the CPU draws none)."""
        d = x.size
        _check_body(body, 2 * n_blocks(d, op.block) * x.itemsize + packed_bytes(d, op.bits))
        lo, hi = scales
        launch(_encode_uniform, body.size, x, lo, hi, blockwise.effective_block(d, op.block),
               op.top, op.randomised, np.uint64(key), op.bits, body, status)
        return b""

    def decode(self, op, extra: bytes, body, d: int, dtype, out, accumulate: bool,
               status) -> None:
        """``out[:] =`` (``+=`` when ``accumulate``) the grid values of the body."""
        dtype = np.dtype(dtype)
        launch(_decode_uniform, d, body, n_blocks(d, op.block), dtype.itemsize,
               blockwise.effective_block(d, op.block), op.top, op.bits, out, accumulate,
               accumulate and dtype == np.float32, status)
