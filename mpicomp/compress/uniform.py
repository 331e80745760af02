"""`Uniform`: a uniform k-bit grid per block (weight quantisation of quantised Adam).

Each block B is sent as its minimum and maximum (in the input's precision) and one k-bit level
per coordinate on the grid ``lo_B + ℓ·Δ_B``, ``Δ_B = (hi_B − lo_B)/(2^k − 1)``, ``ℓ = 0 … 2^k − 1``.
Rounding to the grid is to the nearest point (deterministic, biased) or stochastic between the
two neighbours (unbiased).

References
----------
Chen, Shen, Huang, Yin, Zhang, "Quantized Adam with error feedback", ACM TIST 2021
(arXiv:2004.14180): workers hold the weights on a uniform grid of resolution Δ and the loss
floor grows with Δ.
"""

from __future__ import annotations

import numpy as np

from . import blockwise, kernels
from .base import Compressor, DecodeError, n_blocks, output_array, value_bits
from .bitpack import check_padding, packed_nbytes
from .counter_rng import draw_key

ROUNDINGS = ("nearest", "stochastic")
MAX_BITS = 16


class Uniform(Compressor):
    """Uniform ``bits``-bit grid between each block's minimum and maximum.

    Parameters
    ----------
    bits : int
        Bits a coordinate, 1 … 16 (``2^bits`` grid points per block).
    block : int
        Block length; 0 means the whole vector is one block.
    rounding : {"nearest", "stochastic"}
        Nearest grid point (ties up), or ``⌊t + u⌋`` with ``u ~ U[0, 1)`` (unbiased).

    Notes
    -----
    ``|C(x)_j − x_j| ≤ Δ_B/2`` (nearest) or ``< Δ_B`` (stochastic, variance
    ``≤ Δ_B²/4``). With ``Δ_B ≤ 2‖x_B‖∞/(2^k − 1)`` this gives ``ω = b/(2^k − 1)²``
    (stochastic) and the contraction ``δ = 1 − b/(2^k − 1)²`` when positive (nearest), b the block
    length. Bits: ``2·32·blocks + k·d`` for float32 input. The grid ends are the block's own
    extreme values, so they are exact; a constant block costs no information but is still sent.
    """

    name = "uniform"
    code = 14

    def __init__(self, bits: int = 8, block: int = 0, rounding: str = "nearest"):
        if int(bits) != bits or not 1 <= bits <= MAX_BITS:
            raise ValueError(f"bits={bits!r} must be an integer in 1..{MAX_BITS}")
        if int(block) != block or block < 0:
            raise ValueError(f"block={block!r} must be an integer ≥ 0 (0 = whole vector)")
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}: choose one of {', '.join(ROUNDINGS)}")
        self.bits, self.block, self.rounding = int(bits), int(block), rounding
        self.top = (1 << self.bits) - 1  # the largest level

    @property
    def unbiased(self) -> bool:
        return self.rounding == "stochastic"

    @property
    def randomised(self) -> bool:
        return self.rounding == "stochastic"

    def spec(self) -> str:
        parts = [f"bits={self.bits}"] + ([f"block={self.block}"] if self.block else [])
        parts += [] if self.rounding == "nearest" else [f"rounding={self.rounding}"]
        return f"{self.name}:{','.join(parts)}"

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return 2 * value_bits(dtype) * n_blocks(d, self.block) + self.bits * d

    def _ratio(self, d: int) -> float:
        b = max(1, d if self.block <= 0 else min(self.block, d))
        return b / self.top**2

    def omega(self, d: int):
        return self._ratio(d) if self.unbiased else None

    def delta(self, d: int):
        if self.unbiased:
            return None
        ratio = self._ratio(d)
        return 1.0 - ratio if ratio < 1 else None

    def grid(self, x: np.ndarray):
        """``(block, lo, hi)`` of ``x``: the block length and each block's extremes (float64)."""
        block = blockwise.effective_block(x.size, self.block)
        nb = n_blocks(x.size, self.block)
        lo, hi = np.empty(nb), np.empty(nb)
        kernels.backend().block_extremes(x, block, lo, hi)
        return block, lo, hi

    def encode_body(self, x, rng):
        key = draw_key(rng) if self.randomised else 0
        block, lo, hi = self.grid(x)
        fields = np.zeros(packed_nbytes(x.size, self.bits), dtype=np.uint8)
        kernels.backend().uniform_levels(x, lo, hi, block, self.top, np.uint64(key),
                                         self.randomised, self.bits, fields)
        ends = np.stack([lo, hi], axis=1).ravel().astype(x.dtype)
        return b"", [blockwise.scalar_bytes(ends), fields], self.body_bits(x.size, x.dtype)

    def decode_body(self, extra, body, d, dtype, out=None):
        nb = n_blocks(d, self.block)
        size = 2 * nb * dtype.itemsize
        if body.size < size:
            raise DecodeError(f"{self.spec()}: buffer truncated inside the block ends: "
                              f"{body.size} bytes, need {size}")
        ends = body[:size].view(dtype.newbyteorder("<")).astype(np.float64).reshape(nb, 2)
        lo, hi = ends.T.copy()  # contiguous per-block lows and highs
        if nb and (not np.isfinite(ends).all() or (lo > hi).any()):
            raise DecodeError(f"{self.spec()}: corrupted block ends (need finite lo ≤ hi)")
        fields = body[size:]
        nbits = self.bits * d
        self._check_body_size(fields, nbits)
        check_padding(fields, nbits)
        block = blockwise.effective_block(d, self.block)
        out = output_array(out, d, dtype)
        kernels.backend().uniform_values(fields, lo, hi, block, self.top, self.bits, out)
        return out
