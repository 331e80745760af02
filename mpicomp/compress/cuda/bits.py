"""Device functions every GPU kernel shares: counter-based random words, bit fields, float
arithmetic rounded as the CPU rounds it, and bit casts.

The layout is `mpicomp.compress.bitpack`'s: field ``j`` of width ``w`` occupies stream bits
``j·w … j·w + w − 1``, least significant bit first, bytes in little-endian bit order.

`mul_rn` and `add_rn` round each product and sum on its own: NVVM otherwise fuses ``a * b + c``
into one FMA (it contracts by default, also without fastmath), which rounds once and can change
a level or a decoded value compared with the CPU. The bit casts (`float32_bits`, …) are
libdevice's on the GPU and NumPy views under the simulator.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float32, float64, int32, int64, uint8, uint32, uint64
from numba.cuda import libdevice

from . import SIMULATED

GAMMA = uint64(0x9E3779B97F4A7C15)
MIX1 = uint64(0xBF58476D1CE4E5B9)
MIX2 = uint64(0x94D049BB133111EB)


if SIMULATED:  # Python integers, wrapped to 64 bits (NumPy scalars would warn on overflow)
    _MASK = (1 << 64) - 1

    @cuda.jit(device=True)
    def splitmix64(key, counter):
        """SplitMix64 output for ``counter`` under ``key`` (`counter_rng.splitmix64`)."""
        z = ((int(counter) + 1) * int(GAMMA) + int(key)) & _MASK
        z = ((z ^ (z >> 30)) * int(MIX1)) & _MASK
        z = ((z ^ (z >> 27)) * int(MIX2)) & _MASK
        return uint64(z ^ (z >> 31))

else:

    @cuda.jit(device=True, inline=True)
    def splitmix64(key, counter):
        """SplitMix64 output for ``counter`` under ``key`` (`counter_rng.splitmix64`)."""
        z = (uint64(counter) + uint64(1)) * GAMMA + uint64(key)
        z = (z ^ (z >> uint64(30))) * MIX1
        z = (z ^ (z >> uint64(27))) * MIX2
        return z ^ (z >> uint64(31))


@cuda.jit(device=True, inline=True)
def word32(key, j):
    """Coordinate ``j``'s 32-bit random word: the low (j even) or high (j odd) half of
    ``splitmix64(key, j >> 1)`` (`counter_rng.words32`)."""
    w = splitmix64(key, uint64(j) >> uint64(1))
    if j & 1:
        return uint32(w >> uint64(32))
    return uint32(w & uint64(0xFFFFFFFF))


@cuda.jit(device=True, inline=True)
def read_field(buf, j, width):
    """Field ``j`` of ``width`` ≤ 32 bits of the packed stream ``buf`` (bytes past the end of
    ``buf`` read as 0)."""
    bit = uint64(j) * uint64(width)
    first = bit >> uint64(3)
    v = uint64(0)
    for k in range(5):
        i = first + uint64(k)
        if i < buf.size:
            v |= uint64(buf[i]) << uint64(8 * k)
    return uint32((v >> (bit & uint64(7))) & ((uint64(1) << uint64(width)) - uint64(1)))


@cuda.jit(device=True, inline=True)
def field_span(i, width, n):
    """The fields ``lo … hi − 1`` (of ``n``) whose bits fall in output byte ``i``."""
    lo = (8 * i) // width
    hi = min(n, (8 * i + 7) // width + 1)
    return lo, hi


@cuda.jit(device=True, inline=True)
def place(field, j, width, i):
    """The bits of ``field`` (field ``j`` of ``width`` bits) that land in output byte ``i``."""
    shift = j * width - 8 * i
    f = uint64(field)
    if shift >= 0:
        return uint8((f << uint64(shift)) & uint64(0xFF))
    return uint8((f >> uint64(-shift)) & uint64(0xFF))


def packed_bytes(n: int, width: int) -> int:
    """Bytes of ``n`` packed fields of ``width`` bits."""
    return -(-n * width // 8)


if SIMULATED:  # the simulator runs device functions as Python on NumPy scalars

    @cuda.jit(device=True)
    def mul_rn(a, b):
        """``a·b`` in float64, rounded on its own (never fused into an FMA)."""
        return np.float64(a) * np.float64(b)

    @cuda.jit(device=True)
    def add_rn(a, b):
        """``a + b`` in float64, rounded on its own (never fused into an FMA)."""
        return np.float64(a) + np.float64(b)

    @cuda.jit(device=True)
    def float32_bits(v):
        """The bit pattern of ``float32(v)`` as uint32."""
        return np.float32(v).view(np.uint32)

    @cuda.jit(device=True)
    def float64_bits(v):
        """The bit pattern of ``float64(v)`` as uint64."""
        return np.float64(v).view(np.uint64)

    @cuda.jit(device=True)
    def float32_from_bits(bits):
        """The float32 whose bit pattern is the uint32 ``bits``."""
        return np.uint32(bits).view(np.float32)

    @cuda.jit(device=True)
    def float64_from_bits(bits):
        """The float64 whose bit pattern is the uint64 ``bits``."""
        return np.uint64(bits).view(np.float64)

else:

    @cuda.jit(device=True, inline=True)
    def mul_rn(a, b):
        """``a·b`` in float64, rounded on its own (never fused into an FMA)."""
        return libdevice.dmul_rn(float64(a), float64(b))

    @cuda.jit(device=True, inline=True)
    def add_rn(a, b):
        """``a + b`` in float64, rounded on its own (never fused into an FMA)."""
        return libdevice.dadd_rn(float64(a), float64(b))

    @cuda.jit(device=True, inline=True)
    def float32_bits(v):
        """The bit pattern of ``float32(v)`` as uint32."""
        return uint32(libdevice.float_as_int(float32(v)))

    @cuda.jit(device=True, inline=True)
    def float64_bits(v):
        """The bit pattern of ``float64(v)`` as uint64."""
        return uint64(libdevice.double_as_longlong(float64(v)))

    @cuda.jit(device=True, inline=True)
    def float32_from_bits(bits):
        """The float32 whose bit pattern is the uint32 ``bits``."""
        return libdevice.int_as_float(int32(bits))

    @cuda.jit(device=True, inline=True)
    def float64_from_bits(bits):
        """The float64 whose bit pattern is the uint64 ``bits``."""
        return libdevice.longlong_as_double(int64(bits))



