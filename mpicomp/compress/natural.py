"""Natural compression C_nat: stochastic rounding to a power of two, sign + exponent on the wire.

References
----------
Horváth, Ho, Horváth, Sahu, Canini, Richtárik, "Natural compression for distributed deep
learning", MSML 2022 (arXiv:1905.10988).
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .base import Compressor, DecodeError, raise_non_finite
from .bitpack import check_padding, pack_fields, unpack_fields
from .counter_rng import draw_key, words32, words64

#: per dtype: (unsigned view, exponent bits, mantissa bits)
LAYOUT = {np.dtype(np.float32): (np.uint32, 8, 23), np.dtype(np.float64): (np.uint64, 11, 52)}


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

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return d * (1 + LAYOUT[np.dtype(dtype)][1])

    def omega(self, d: int) -> float:
        return 1 / 8

    def _encode_body(self, x, rng):
        key = draw_key(rng)
        utype, ebits, mbits = LAYOUT[x.dtype]
        bits = x.view(utype)
        width = 1 + ebits
        if kernels.active() and x.dtype == np.float32:
            out = np.zeros(-(-x.size * width // 8), dtype=np.uint8)
            bad = kernels.natural_pack32(bits, np.uint64(key), out)
        else:
            top = (1 << ebits) - 1
            e = (bits >> utype(mbits)) & utype(top)
            m = bits & utype((1 << mbits) - 1)
            if x.dtype == np.float32:
                up = (words32(key, x.size) >> np.uint32(32 - mbits)) < m
            else:
                up = (words64(key, x.size) >> np.uint64(64 - mbits)) < m
            e = e + up.astype(utype)
            over = e >= top
            bad = int(np.argmax(over)) if over.any() else -1
            out = pack_fields((((bits >> utype(8 * x.itemsize - 1)) << utype(ebits)) | e).astype(np.uint32), width)
        if bad >= 0:
            raise_non_finite(x)
            raise ValueError(
                f"natural: |x[{bad}]| = {abs(x[bad]):g} would round up past the largest finite "
                f"power of two of {x.dtype}"
            )
        return b"", out, x.size * width

    def _decode_body(self, extra, body, d, dtype, out=None):
        utype, ebits, mbits = LAYOUT[dtype]
        width = 1 + ebits
        self._check_body_size(body, d * width)
        check_padding(body, d * width)
        if kernels.active() and dtype == np.float32:
            out = self._output(out, d, dtype).view(np.uint32)
            bad = kernels.natural_unpack32(body, out)
        else:
            f = unpack_fields(body, width, d).astype(utype)
            e = f & utype((1 << ebits) - 1)
            over = e == (1 << ebits) - 1
            bad = int(np.argmax(over)) if over.any() else -1
            out = ((f >> utype(ebits)) << utype(8 * dtype.itemsize - 1)) | (e << utype(mbits))
        if bad >= 0:
            raise DecodeError(f"natural: exponent field of all ones at coordinate {bad}: corrupted")
        return out.view(dtype)

    def accumulates(self, dtype) -> bool:
        return np.dtype(dtype) == np.float32

    def _add_body(self, extra, body, d, dtype, acc):
        self._check_body_size(body, d * 9)
        check_padding(body, d * 9)
        bad = kernels.natural_add32(body, acc)
        if bad >= 0:
            raise DecodeError(f"natural: exponent field of all ones at coordinate {bad}: corrupted")
