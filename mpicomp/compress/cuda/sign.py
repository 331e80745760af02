"""GPU codecs of the 1-bit operators: `Sign` and `ScaledSign` (`mpicomp.compress.sign`).

The body is the block scales' bytes (scaled sign only) followed by the sign bits, bit ``j`` set
where ``x[j] < 0``; one kernel writes both, one thread per output byte. Decoding runs one thread
per coordinate: ``±scale`` of its block, chosen by a select (never ``s − 2s·bit``, which would
overflow), as `numba_kernels.sign_unpack` does.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, uint8

from ...backend import get_xp
from ..base import n_blocks
from ..blockwise import effective_block
from ..sign import OVERFLOW_RESCALE, ScaledSign, Sign, block_mean_abs
from . import NON_FINITE, REJECTED, launch
from .codec import DeviceCodec, register


@cuda.jit(cache=True)
def _sign_pack(x, head, body, status):
    """Byte ``i`` of ``head ‖ sign bits of x``; NaN/Inf in ``x`` → ``NON_FINITE``."""
    i = cuda.grid(1)
    if i < body.size:
        if i < head.size:
            body[i] = head[i]
        else:
            lo = 8 * (i - head.size)
            hi = min(lo + 8, x.size)
            byte = uint8(0)
            for j in range(lo, hi):
                v = x[j]
                if v < 0:
                    byte |= uint8(1) << uint8(j - lo)
                if not math.isfinite(v):
                    cuda.atomic.min(status, NON_FINITE, j)
            body[i] = byte


@cuda.jit(cache=True)
def _sign_unpack(bits, scales, block, out, accumulate, status):
    """``out[j] (+)= −s if bit j else s`` with ``s = scales[j // block]`` (1 when ``scales`` is
    empty: `Sign`); a NaN/Inf or negative scale → ``REJECTED`` at its block's first coordinate.
    ``s`` is exact in float64, so the sum is the CPU's ``acc + float64(±s)``."""
    j = cuda.grid(1)
    if j < out.size:
        b = j // block
        s = 1.0
        if scales.size:
            s = float64(scales[b])
            if j == b * block and not (math.isfinite(s) and s >= 0):
                cuda.atomic.min(status, REJECTED, j)
        v = -s if (bits[j >> 3] >> (j & 7)) & 1 else s
        if accumulate:
            out[j] += v
        else:
            out[j] = v


@cuda.jit(cache=True)
def _block_means(l1, rescaled, largest, block, d, out):
    """``out[b]`` = mean |x_B| as `block_mean_abs` forms it from the block's ℓ1 norm ``l1[b]``,
    or, where that overflowed, from the ℓ1 norm ``rescaled[b]`` of x_B·2⁻⁶⁴, capped at
    ``largest[b]`` = max|x_B|; rounded to ``out``'s dtype."""
    b = cuda.grid(1)
    if b < out.size:
        size = min(block, d - b * block)
        mean = l1[b] / size
        if not math.isfinite(l1[b]):
            mean = min(rescaled[b] / size / OVERFLOW_RESCALE, largest[b])
        out[b] = mean


@register(Sign)
class SignCodec(DeviceCodec):
    """sign(x), one bit a coordinate; decodes to ±1."""

    def scales(self, op, x) -> tuple:
        """No scales: ``()``."""
        return ()

    def host_scales(self, op, x) -> tuple:
        """No scales: ``()``."""
        return ()

    def encode(self, op, x, key, scales, body, status) -> bytes:
        launch(_sign_pack, body.size, x, body[:0], body, status)
        return b""

    def decode(self, op, extra, body, d, dtype, out, accumulate, status) -> None:
        no_scales = body[:0].view(np.dtype(dtype))
        launch(_sign_unpack, d, body, no_scales, max(d, 1), out, accumulate, status)


@register(ScaledSign)
class ScaledSignCodec(DeviceCodec):
    """mean|x_B|·sign(x_B) per block: the scales (in the input's dtype) then the sign bits."""

    def scales(self, op, x) -> tuple:
        """``(scales,)``: mean |x_B| per block in ``x``'s dtype, from `reduce.block_norms` on
        the device (the ℓ1 sums may differ from the CPU's in the last bits). A float64 block
        whose ℓ1 sum overflows takes `block_mean_abs`'s fallback, selected per block without a
        sync, so float64 vectors cost two more reductions (float32 sums cannot overflow)."""
        from .reduce import block_norms

        xp = get_xp(x)
        d = int(x.size)
        block = effective_block(d, op.block)
        l1 = block_norms(x, block, 1, xp)
        rescaled = largest = l1
        if x.dtype == np.float64:
            rescaled = block_norms(x * OVERFLOW_RESCALE, block, 1, xp)
            largest = block_norms(x, block, np.inf, xp)
        out = xp.empty(n_blocks(d, op.block), dtype=x.dtype)
        launch(_block_means, out.size, l1, rescaled, largest, block, d, out)
        return (out,)

    def host_scales(self, op, x) -> tuple:
        """``(scales,)`` exactly as the CPU's `ScaledSign.encode_body` sends them (NumPy)."""
        x = np.asarray(x)
        return (block_mean_abs(x, effective_block(x.size, op.block)).astype(x.dtype),)

    def encode(self, op, x, key, scales, body, status) -> bytes:
        launch(_sign_pack, body.size, x, scales[0].view(np.uint8), body, status)
        return b""

    def decode(self, op, extra, body, d, dtype, out, accumulate, status) -> None:
        dtype = np.dtype(dtype)
        head = n_blocks(d, op.block) * dtype.itemsize
        launch(_sign_unpack, d, body[head:], body[:head].view(dtype),
               effective_block(d, op.block), out, accumulate, status)
