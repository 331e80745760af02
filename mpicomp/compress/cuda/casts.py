"""GPU codecs of the operators that send values: `Identity`, `FP16`, `BF16`, `Natural`, `RandK`.

Each kernel writes the bytes of its CPU twin (`cast`, `natural`, `sparse`) for the same input
and key. The float conversions are integer arithmetic on the bit patterns (`narrow`, `widen`),
so they round exactly as NumPy does, on the device and under the simulator alike. Encoders run
one thread per value (per output byte for the bit-packed natural fields and index sections),
decoders one thread per coordinate.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64, int64, uint8, uint16, uint64

from ...backend import get_xp
from ..cast import BF16, BF16_EXPONENT, FP16, FP16_MAX, Identity
from ..natural import Natural
from ..sparse import KEY, RandK, index_width
from . import NON_FINITE, REJECTED, launch
from .bits import field_span, mul_rn, place, read_field, splitmix64, word32
from .codec import DeviceCodec, register

#: (exponent bits, mantissa bits) of the input dtypes
FORMATS = {np.dtype(np.float32): (8, 23), np.dtype(np.float64): (11, 52)}
#: the unsigned integer view of each input dtype
UINTS = {np.dtype(np.float32): np.dtype(np.uint32), np.dtype(np.float64): np.dtype(np.uint64)}
#: (exponent bits, mantissa bits) of IEEE half precision and of bfloat16
HALF = (5, 10)
BFLOAT16 = (8, 7)


# --- float bit patterns ----------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def narrow(bits, src_e, src_m, dst_e, dst_m):
    """The bit pattern of the float with bit pattern ``bits`` (``src_e`` exponent and ``src_m``
    mantissa bits) rounded to nearest even into a narrower format (``dst_e``, ``dst_m``), as an
    IEEE conversion does: subnormal results, overflow to Inf, NaN stays NaN."""
    sign = (bits >> uint64(src_e + src_m)) & uint64(1)
    e = int64((bits >> uint64(src_m)) & uint64((1 << src_e) - 1))
    m = bits & ((uint64(1) << uint64(src_m)) - uint64(1))
    src_top = (int64(1) << src_e) - 1
    dst_top = (int64(1) << dst_e) - 1
    inf = uint64(dst_top) << uint64(dst_m)
    if e == src_top:
        mag = inf | (uint64(m != 0) << uint64(dst_m - 1))
    else:
        full = m if e == 0 else m | (uint64(1) << uint64(src_m))
        # biased target exponent of the leading bit's position (subnormal input: the minimum)
        et = max(e, 1) - ((int64(1) << (src_e - 1)) - 1) + ((int64(1) << (dst_e - 1)) - 1)
        if et >= dst_top:
            mag = inf
        else:
            shift = src_m - dst_m
            base = int64(0)
            if et >= 1:
                base = et - 1  # the hidden bit of q carries it to et
            else:
                shift = min(shift + 1 - et, 63)  # a subnormal result
            q = full >> uint64(shift)
            rem = full & ((uint64(1) << uint64(shift)) - uint64(1))
            half = uint64(1) << uint64(shift - 1)
            if rem > half or (rem == half and (q & uint64(1)) != uint64(0)):
                q += uint64(1)  # a carry moves into the exponent, up to the Inf pattern
            mag = (uint64(base) << uint64(dst_m)) + q
    return (sign << uint64(dst_e + dst_m)) | mag


@cuda.jit(device=True, inline=True)
def widen(bits, ebits, mbits):
    """The float64 value of the bit pattern ``bits`` of a float with ``ebits`` exponent and
    ``mbits`` mantissa bits (the sign bit above them); exact. An all-ones exponent (NaN/Inf)
    is read as the one below it (a finite value): the caller rejects it."""
    m = bits & ((uint64(1) << uint64(mbits)) - uint64(1))
    e = min(int64((bits >> uint64(mbits)) & uint64((1 << ebits) - 1)), (int64(1) << ebits) - 2)
    bias = (int64(1) << (ebits - 1)) - 1
    if e == 0:
        mag = math.ldexp(float64(m), int(1 - bias - mbits))
    else:
        mag = math.ldexp(float64(m | (uint64(1) << uint64(mbits))), int(e - bias - mbits))
    if (bits >> uint64(ebits + mbits)) & uint64(1):
        return -mag
    return mag


@cuda.jit(device=True, inline=True)
def to_payload(value, single):
    """``value`` (float64) rounded to the payload's dtype: float32 when ``single``."""
    if single:
        return float64(float32(value))
    return value


@cuda.jit(device=True, inline=True)
def store(out, j, value, accumulate):
    """``out[j] = value``, or ``out[j] += value`` when ``accumulate``."""
    if accumulate:
        out[j] += value
    else:
        out[j] = value


@cuda.jit(device=True, inline=True)
def all_ones(field, ebits, mbits):
    """Whether the exponent of the float pattern ``field`` is all ones (NaN/Inf)."""
    top = uint64((1 << ebits) - 1)
    return ((field >> uint64(mbits)) & top) == top


# --- kernels ---------------------------------------------------------------------------------
@cuda.jit(cache=True)
def _scan_finite(x, status):
    """``status[NON_FINITE]`` ← the first coordinate of ``x`` that is NaN/Inf."""
    j = cuda.grid(1)
    if j < x.size and not math.isfinite(x[j]):
        cuda.atomic.min(status, NON_FINITE, j)


@cuda.jit(cache=True)
def _identity_encode(x, xbits, out, status):
    """``out[j] = xbits[j]`` (the value's bit pattern); NaN/Inf → ``NON_FINITE``."""
    j = cuda.grid(1)
    if j < xbits.size:
        out[j] = xbits[j]
        if not math.isfinite(x[j]):
            cuda.atomic.min(status, NON_FINITE, j)


@cuda.jit(cache=True)
def _copy_checked(values, out, accumulate, status):
    """``out[j] (+)= values[j]``; a NaN/Inf value → ``REJECTED``."""
    j = cuda.grid(1)
    if j < out.size:
        v = values[j]
        if not math.isfinite(v):
            cuda.atomic.min(status, REJECTED, j)
        store(out, j, v, accumulate)


@cuda.jit(cache=True)
def _fp16_encode(x, xbits, src_e, src_m, out, status):
    """IEEE half bit patterns of ``x`` (round to nearest even); NaN/Inf → ``NON_FINITE``,
    |x| > 65504 → ``REJECTED``."""
    j = cuda.grid(1)
    if j < out.size:
        v = float64(x[j])
        if not math.isfinite(v):
            cuda.atomic.min(status, NON_FINITE, j)
        elif abs(v) > FP16_MAX:
            cuda.atomic.min(status, REJECTED, j)
        half = narrow(uint64(xbits[j]), src_e, src_m, HALF[0], HALF[1])
        out[j] = uint16(half & uint64(0xFFFF))


@cuda.jit(cache=True)
def _bf16_encode(x, xbits, src_e, src_m, out, status):
    """bfloat16 bit patterns: ``x`` rounded to float32, then its top 16 bits rounded to
    nearest even (`cast.BF16`); NaN/Inf → ``NON_FINITE``, rounding past the largest bfloat16
    → ``REJECTED``."""
    j = cuda.grid(1)
    if j < out.size:
        b = uint64(xbits[j])
        single = b if src_m == 23 else narrow(b, src_e, src_m, 8, 23)
        rounded = (single + uint64(0x7FFF) + ((single >> uint64(16)) & uint64(1))) >> uint64(16)
        if not math.isfinite(x[j]):
            cuda.atomic.min(status, NON_FINITE, j)
        elif (rounded & uint64(BF16_EXPONENT)) == uint64(BF16_EXPONENT):
            cuda.atomic.min(status, REJECTED, j)
        out[j] = uint16(rounded & uint64(0xFFFF))


@cuda.jit(cache=True)
def _decode_halfwords(words, ebits, mbits, out, accumulate, status):
    """``out[j] (+)=`` the value of the 16-bit float pattern ``words[j]`` (half: 5/10,
    bfloat16: 8/7 exponent/mantissa bits); NaN/Inf → ``REJECTED``."""
    j = cuda.grid(1)
    if j < out.size:
        w = uint64(words[j])
        if all_ones(w, ebits, mbits):
            cuda.atomic.min(status, REJECTED, j)
        store(out, j, widen(w, ebits, mbits), accumulate)


@cuda.jit(device=True, inline=True)
def _natural_field(xbits, key, ebits, mbits, j, owner, status):
    """C_nat field ``sign << ebits | exponent'`` of coordinate ``j``: the exponent rounds up
    when the top ``mbits`` bits of its random word are below the mantissa (float32: its 32-bit
    word, float64: its 64-bit word ``splitmix64(key, j)``). ``owner``: report to ``status``."""
    b = uint64(xbits[j])
    top = uint64((1 << ebits) - 1)
    e = (b >> uint64(mbits)) & top
    m = b & ((uint64(1) << uint64(mbits)) - uint64(1))
    if mbits == 23:
        r = uint64(word32(key, j)) >> uint64(32 - mbits)
    else:
        r = splitmix64(key, j) >> uint64(64 - mbits)
    if r < m:
        e += uint64(1)
    if owner:
        if ((b >> uint64(mbits)) & top) == top:
            cuda.atomic.min(status, NON_FINITE, j)
        elif e == top:
            cuda.atomic.min(status, REJECTED, j)
    field = ((b >> uint64(ebits + mbits)) << uint64(ebits)) | e
    return field & ((uint64(1) << uint64(ebits + 1)) - uint64(1))


@cuda.jit(cache=True)
def _natural_pack(xbits, key, ebits, mbits, out, status):
    """Byte ``i`` of the packed C_nat fields (``1 + ebits`` bits each) of ``xbits``;
    NaN/Inf → ``NON_FINITE``, rounding up to the all-ones exponent → ``REJECTED``."""
    i = cuda.grid(1)
    if i < out.size:
        width = ebits + 1
        lo, hi = field_span(i, width, xbits.size)
        byte = uint8(0)
        for j in range(lo, hi):
            field = _natural_field(xbits, key, ebits, mbits, j, (j * width) >> 3 == i, status)
            byte |= place(field, j, width, i)
        out[i] = byte


@cuda.jit(cache=True)
def _natural_unpack(buf, ebits, out, accumulate, status):
    """``out[j] (+)= ±2^(e − bias)`` (0 for e = 0) of C_nat field ``j``; an all-ones exponent
    → ``REJECTED``."""
    j = cuda.grid(1)
    if j < out.size:
        field = uint64(read_field(buf, j, ebits + 1))
        if all_ones(field, ebits, 0):
            cuda.atomic.min(status, REJECTED, j)
        store(out, j, widen(field, ebits, 0), accumulate)


@cuda.jit(cache=True)
def _randk_gather(x, xbits, idx, scale, single, values, status):
    """``values[t] = xbits[idx[t]]`` (the kept values' bit patterns); a finite kept value whose
    ``× scale`` overflows the payload dtype → ``REJECTED`` at its coordinate."""
    t = cuda.grid(1)
    if t < idx.size:
        j = idx[t]
        values[t] = xbits[j]
        v = float64(x[j])
        if math.isfinite(v) and not math.isfinite(to_payload(mul_rn(v, scale), single)):
            cuda.atomic.min(status, REJECTED, j)


@cuda.jit(cache=True)
def _pack_index_fields(idx, width, out):
    """Byte ``i`` of the sorted indices ``idx`` packed in ``width``-bit fields."""
    i = cuda.grid(1)
    if i < out.size:
        lo, hi = field_span(i, width, idx.size)
        byte = uint8(0)
        for t in range(lo, hi):
            byte |= place(idx[t], t, width, i)
        out[i] = byte


@cuda.jit(device=True, inline=True)
def _lower_bound(idx, j):
    """The first position t of the sorted ``idx`` with ``idx[t] >= j`` (``idx.size``: none)."""
    lo = int64(0)
    hi = int64(idx.size)
    while lo < hi:
        mid = (lo + hi) >> 1
        if idx[mid] < j:
            lo = mid + 1
        else:
            hi = mid
    return lo


@cuda.jit(cache=True)
def _pack_index_bitmap(idx, d, out):
    """Byte ``i`` of the ``d``-bit bitmap of the sorted indices ``idx``."""
    i = cuda.grid(1)
    if i < out.size:
        first = int64(8) * i
        t = _lower_bound(idx, first)
        byte = uint8(0)
        while t < idx.size and idx[t] < first + 8 and idx[t] < d:
            byte |= uint8(1) << uint8(idx[t] - first)
            t += 1
        out[i] = byte


@cuda.jit(cache=True)
def _read_index_fields(section, width, d, idx, status):
    """``idx[t]`` = packed index ``t``; one that does not exceed its predecessor or is not below
    ``d`` (a corrupted section) → ``REJECTED`` at its position ``t``."""
    t = cuda.grid(1)
    if t < idx.size:
        j = int64(read_field(section, t, width))
        idx[t] = j
        if j >= d or (t > 0 and j <= int64(read_field(section, t - 1, width))):
            cuda.atomic.min(status, REJECTED, t)


@cuda.jit(device=True, inline=True)
def _kept_value(values, t, j, scale, single, status):
    """Kept value ``t`` (at coordinate ``j``) times ``scale``, rounded to the payload dtype; a
    NaN/Inf value or result → ``REJECTED`` at ``j``."""
    v = float64(values[t])
    r = to_payload(mul_rn(v, scale), single)
    if not (math.isfinite(v) and math.isfinite(r)):
        cuda.atomic.min(status, REJECTED, j)
    return r


@cuda.jit(cache=True)
def _randk_expand(idx, values, scale, single, out, accumulate, status):
    """``out[j] (+)=`` kept value × ``scale`` where ``j`` is in the sorted ``idx``, else 0.0
    (``+= 0.0`` too, exactly as adding a decoded dense vector does)."""
    j = cuda.grid(1)
    if j < out.size:
        t = _lower_bound(idx, j)
        r = 0.0
        if t < idx.size and idx[t] == j:
            r = _kept_value(values, t, j, scale, single, status)
        store(out, j, r, accumulate)


@cuda.jit(cache=True)
def _bitmap_counts(section, d, counts):
    """``counts[i]`` = set bits of bitmap byte ``i`` among the ``d`` coordinates."""
    i = cuda.grid(1)
    if i < counts.size:
        byte = uint64(section[i])
        if int64(8) * i + 8 > d:
            byte &= (uint64(1) << uint64(d - int64(8) * i)) - uint64(1)
        counts[i] = cuda.popc(byte)


@cuda.jit(cache=True)
def _bitmap_expand(section, counts, prefix, values, scale, single, out, accumulate, status):
    """`_randk_expand` for a bitmap section: coordinate ``j``'s bit set → kept value number
    (set bits before it), from ``prefix`` (inclusive running sum of ``counts``). More or fewer
    than ``values.size`` bits set → ``REJECTED`` (at the first surplus bit, or at ``d − 1``)."""
    j = cuda.grid(1)
    if j < out.size:
        b = j >> 3
        byte = uint64(section[b])
        r = 0.0
        if (byte >> uint64(j & 7)) & uint64(1):
            below = byte & ((uint64(1) << uint64(j & 7)) - uint64(1))
            t = prefix[b] - counts[b] + int64(cuda.popc(below))
            if t < values.size:
                r = _kept_value(values, t, j, scale, single, status)
            else:
                cuda.atomic.min(status, REJECTED, j)
        if j == out.size - 1 and prefix[prefix.size - 1] != values.size:
            cuda.atomic.min(status, REJECTED, j)
        store(out, j, r, accumulate)


# --- codecs ----------------------------------------------------------------------------------
class UnscaledCodec(DeviceCodec):
    """A codec whose body depends on nothing beyond ``x`` and the key (no block scales)."""

    def scales(self, op, x) -> tuple:
        """No device scales: ``()``."""
        return ()

    def host_scales(self, op, x) -> tuple:
        """No host scales: ``()``."""
        return ()


def _format(dtype) -> tuple[np.dtype, np.dtype, int, int]:
    """(dtype, its unsigned view, exponent bits, mantissa bits) of a float32/float64 dtype."""
    dtype = np.dtype(dtype)
    return (dtype, UINTS[dtype], *FORMATS[dtype])


@register(Identity)
class IdentityCodec(UnscaledCodec):
    """The values' bytes as they are; NaN/Inf rejected on encode (``NON_FINITE``) and decode."""

    def encode(self, op, x, key, scales, body, status) -> bytes:
        _, utype, _, _ = _format(x.dtype)
        launch(_identity_encode, x.size, x, x.view(utype), body.view(utype), status)
        return b""

    def decode(self, op, extra, body, d, dtype, out, accumulate, status) -> None:
        launch(_copy_checked, d, body.view(np.dtype(dtype)), out, accumulate, status)


class HalfwordCodec(UnscaledCodec):
    """16-bit floats from the input's bit patterns, round to nearest even: ``encoder`` writes
    them, ``halfword`` is the (exponent, mantissa) format they are decoded from."""

    encoder = None
    halfword: tuple = ()

    def encode(self, op, x, key, scales, body, status) -> bytes:
        _, utype, src_e, src_m = _format(x.dtype)
        launch(self.encoder, x.size, x, x.view(utype), src_e, src_m, body.view(np.uint16),
               status)
        return b""

    def decode(self, op, extra, body, d, dtype, out, accumulate, status) -> None:
        launch(_decode_halfwords, d, body.view(np.uint16), *self.halfword, out, accumulate,
               status)


@register(FP16)
class FP16Codec(HalfwordCodec):
    """IEEE half precision, round to nearest even, computed from the input's bit patterns."""

    encoder = _fp16_encode
    halfword = HALF


@register(BF16)
class BF16Codec(HalfwordCodec):
    """bfloat16: float64 input rounded to float32 first, then to the top 16 bits (as the CPU)."""

    encoder = _bf16_encode
    halfword = BFLOAT16


@register(Natural)
class NaturalCodec(UnscaledCodec):
    """C_nat, float32 (9-bit fields) and float64 (12-bit fields), one thread per output byte."""

    def encode(self, op, x, key, scales, body, status) -> bytes:
        _, utype, ebits, mbits = _format(x.dtype)
        launch(_natural_pack, body.size, x.view(utype), np.uint64(key), ebits, mbits, body,
               status)
        return b""

    def decode(self, op, extra, body, d, dtype, out, accumulate, status) -> None:
        _, _, ebits, _ = _format(dtype)
        launch(_natural_unpack, d, body, ebits, out, accumulate, status)


@register(RandK)
class RandKCodec(UnscaledCodec):
    """rand-k: the kept values (raw), then the index section (packed fields or a bitmap).

    The one codec that copies to the device on every call: the k sorted indices come from
    NumPy's PCG64 on the host, exactly as `RandK._indices` draws them (from the key), and are
    uploaded with ``xp.asarray`` (on encode; on decode only with ``shared=1``, where they are
    not in the body). The finiteness scan, the gather with the ``× d/k`` overflow check, the
    index packing and the dense decode run on the device.
    """

    def encode(self, op, x, key, scales, body, status) -> bytes:
        xp = get_xp(x)
        dtype, utype, _, _ = _format(x.dtype)
        d = int(x.size)
        idx = xp.asarray(op._indices(key, d))
        k = int(idx.size)
        value_bytes = k * dtype.itemsize
        launch(_scan_finite, d, x, status)
        launch(_randk_gather, k, x, x.view(utype), idx, d / k if k else 0.0,
               dtype == np.float32, body[:value_bytes].view(utype), status)
        if op.shared:
            return KEY.pack(key)
        section = body[value_bytes:]
        width = index_width(d)
        if k * width <= d:
            launch(_pack_index_fields, section.size, idx, width, section)
        else:
            launch(_pack_index_bitmap, section.size, idx, d, section)
        return b""

    def decode(self, op, extra, body, d, dtype, out, accumulate, status) -> None:
        """One pass over all ``d`` coordinates (zeros included, so ``accumulate`` adds 0.0
        where nothing was kept, as adding the CPU's dense decode does). Each coordinate finds
        its kept value by binary search in the sorted indices (packed ones are read and
        checked on the device first; corrupted ones lower ``status[REJECTED]`` to the entry's
        position), or, for a bitmap, by its rank: set bits before it, from a running sum of
        per-byte counts (``xp.cumsum``)."""
        xp = get_xp(body)
        dtype = np.dtype(dtype)
        k = op.k_of(d)
        value_bytes = k * dtype.itemsize
        values = body[:value_bytes].view(dtype)
        args = (values, d / k if k else 0.0, dtype == np.float32, out, accumulate, status)
        width = index_width(d)
        if op.shared:
            idx = xp.asarray(op._indices(KEY.unpack(extra)[0], d))
        elif k * width <= d:
            idx = xp.empty(k, dtype=np.int64)
            launch(_read_index_fields, k, body[value_bytes:], width, d, idx, status)
        else:
            section = body[value_bytes:]
            counts = xp.empty(section.size, dtype=np.int64)
            launch(_bitmap_counts, section.size, section, d, counts)
            launch(_bitmap_expand, d, section, counts, xp.cumsum(counts), *args)
            return
        launch(_randk_expand, d, idx, *args)
