"""Natural compression C_nat: stochastic rounding to a power of two, sign + exponent on the wire.

References
----------
Horváth, Ho, Horváth, Sahu, Canini, Richtárik, "Natural compression for distributed deep
learning", MSML 2022 (arXiv:1905.10988).
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .base import Compressor, DecodeError, output_array, raise_non_finite
from .bitpack import check_padding
from .counter_rng import draw_key

#: bits of one C_nat field, per dtype: the sign and the exponent
FIELD_BITS = {np.dtype(np.float32): 1 + 8, np.dtype(np.float64): 1 + 11}


class Natural(Compressor):
    """C_nat: keep the exponent e with probability 1 − m/2^M, else e + 1; send sign and exponent.

    Notes
    -----
    Unbiased, ω = 1/8 (E C(t)²/t² = 9/8 at |t| = (4/3)·2^k, 1 at powers of two). 9 bits a
    float32 value (1 + 8), 12 bits a float64 value (1 + 11). The rounding probability is exact:
    the top M bits of the coordinate's random word are compared with the mantissa.

    Edge cases: zero stays zero; a subnormal t rounds to 0 or to the smallest normal 2^(1−bias)
    with the same rule (probability |t|/2^(1−bias)), so it stays unbiased; a value that would
    round up to 2^(emax+1) (|t| > the largest finite power of two) raises ValueError, as do NaN
    and Inf.
    """

    name = "natural"
    code = 10
    unbiased = True
    randomised = True
    kernel_checks_finite = True
    writes_in_place = True

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return d * FIELD_BITS[np.dtype(dtype)]

    def omega(self, d: int) -> float:
        return 1 / 8

    def write_body(self, x, rng, out):
        bad = kernels.backend().natural_pack(x, np.uint64(draw_key(rng)), out)
        if bad >= 0:
            raise_non_finite(x)
            raise ValueError(
                f"natural: |x[{bad}]| = {abs(x[bad]):g} would round up past the largest finite "
                f"power of two of {x.dtype}"
            )
        return b""

    def decode_body(self, extra, body, d, dtype, out=None):
        self._check_fields(body, d, dtype)
        out = output_array(out, d, dtype)
        self._raise_if_bad(kernels.backend().natural_unpack(body, out))
        return out

    def accumulates(self, dtype) -> bool:
        return np.dtype(dtype) == np.float32

    def add_body(self, extra, body, d, dtype, acc):
        self._check_fields(body, d, dtype)
        self._raise_if_bad(kernels.backend().natural_add32(body, acc))

    def _check_fields(self, body, d, dtype) -> None:
        nbits = d * FIELD_BITS[dtype]
        self._check_body_size(body, nbits)
        check_padding(body, nbits)

    @staticmethod
    def _raise_if_bad(bad: int) -> None:
        if bad >= 0:
            raise DecodeError(f"natural: exponent field of all ones at coordinate {bad}: corrupted")
