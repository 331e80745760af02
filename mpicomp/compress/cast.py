"""Deterministic casts: `Identity` (the input precision), `FP16`, `BF16` (16 bits a value)."""

from __future__ import annotations

import numpy as np

from . import kernels
from .base import Compressor, non_finite_decoded, output_array, raise_non_finite, value_bits
from .numpy_kernels import BF16_EXPONENT, FP16_MAX  # the GPU codecs import them from here

BF16_MAX = float(np.array(0x7F7F0000, np.uint32).view(np.float32))


class Identity(Compressor):
    """Sends the values as they are (float32 or float64): ω = 0.

    Notes
    -----
    Decoding rejects a body holding NaN/Inf (no encoder writes one); with Numba the check rides
    in the copy into the output.
    """

    name = "identity"
    code = 1
    unbiased = True
    writes_in_place = True

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return value_bits(dtype) * d

    def omega(self, d: int) -> float:
        return 0.0

    def write_body(self, x, rng, out):
        np.copyto(out.view(x.dtype.newbyteorder("<")), x)
        return b""

    def decode_body(self, extra, body, d, dtype, out=None):
        self._check_body_size(body, self.body_bits(d, dtype))
        out = output_array(out, d, dtype)
        if not kernels.backend().copy_finite(body, out):
            raise non_finite_decoded(self.spec(), out)
        return out


class FP16(Compressor):
    """IEEE half precision, round to nearest even (biased).

    Notes
    -----
    A value beyond ±65504 is an error (it would become Inf). In the normal range the relative
    error is ≤ 2⁻¹¹, so δ = 1 − 2⁻²² there; values below 2⁻¹⁴ lose relative precision.
    """

    name = "fp16"
    code = 7
    kernel_checks_finite = True
    writes_in_place = True

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return 16 * d

    def delta(self, d: int) -> float:
        return 1.0 - 2.0**-22

    def write_body(self, x, rng, out):
        if not kernels.backend().fp16_pack(x, out):  # NaN/Inf, or beyond ±65504
            raise_non_finite(x)
            j = int(np.argmax(np.abs(x)))
            raise ValueError(
                f"fp16: |x[{j}]| = {abs(x[j]):g} exceeds the float16 range ±{FP16_MAX:g}"
            )
        return b""

    def decode_body(self, extra, body, d, dtype, out=None):
        self._check_body_size(body, 16 * d)
        out = output_array(out, d, dtype)
        if kernels.backend().fp16_unpack(body, out) >= 0:
            raise non_finite_decoded(self.spec(), body.view("<f2"))
        return out


class BF16(Compressor):
    """bfloat16: the top 16 bits of float32, round to nearest even (biased).

    Notes
    -----
    Same exponent range as float32 (float64 input is first rounded to float32); relative error
    ≤ 2⁻⁸ for normal values, so δ = 1 − 2⁻¹⁶.
    """

    name = "bf16"
    code = 8
    kernel_checks_finite = True
    writes_in_place = True

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return 16 * d

    def delta(self, d: int) -> float:
        return 1.0 - 2.0**-16

    def write_body(self, x, rng, out):
        if not kernels.backend().bf16_pack(x, out):  # NaN/Inf, or past the largest bfloat16
            raise_non_finite(x)
            with np.errstate(over="ignore"):  # float64 beyond float32's range
                bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            j = int(np.argmax((rounded & BF16_EXPONENT) == BF16_EXPONENT))
            raise ValueError(
                f"bf16: |x[{j}]| = {abs(x[j]):g} rounds past the largest finite bfloat16 "
                f"±{BF16_MAX:g} (bfloat16 has float32's range)"
            )
        return b""

    def decode_body(self, extra, body, d, dtype, out=None):
        self._check_body_size(body, 16 * d)
        out = output_array(out, d, dtype)
        if kernels.backend().bf16_unpack(body, out) >= 0:
            values = (body.view("<u2").astype(np.uint32) << 16).view(np.float32)
            raise non_finite_decoded(self.spec(), values)
        return out
