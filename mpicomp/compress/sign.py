"""1-bit operators: `Sign` (signSGD) and `ScaledSign` (ℓ1-scaled sign per block).

References
----------
Bernstein et al., "signSGD: Compressed optimisation for non-convex problems", ICML 2018.
Karimireddy et al., "Error feedback fixes SignSGD and other gradient compression schemes", 2019.
"""

from __future__ import annotations

import numpy as np

from . import blockwise, kernels
from .base import Compressor, n_blocks, output_array, raise_non_finite, value_bits
from .bitpack import check_padding

#: power-of-two rescaling for ℓ1 sums that overflow float64: 2³² terms of ≤ 1.8e308·2⁻⁶⁴ fit
OVERFLOW_RESCALE = 2.0**-64


def block_mean_abs(x: np.ndarray, block: int) -> np.ndarray:
    """mean |x_B| per block of length ``block``, in float64; finite for every finite ``x``.

    ‖x_B‖₁/|B| as `blockwise.norms` computes it (the same bytes as always); a block whose ℓ1
    sum overflows float64 (only float64 input can) is summed again on x_B·2⁻⁶⁴ and scaled back,
    capped at max|x_B| so rounding cannot push it past the largest float (two more passes, only
    when a sum overflowed). NaN/Inf in ``x`` raise the non-finite-entry ValueError.
    """
    l1 = blockwise.norms(x, block, 1)
    sizes = np.minimum(block, x.size - block * np.arange(l1.size))
    means = l1 / np.maximum(sizes, 1)
    overflowed = ~np.isfinite(l1)
    if overflowed.any():
        raise_non_finite(x)  # NaN/Inf input; otherwise finite sums overflowed: redo them scaled
        rescaled = (blockwise.norms(x * OVERFLOW_RESCALE, block, 1) / np.maximum(sizes, 1)
                    / OVERFLOW_RESCALE)
        capped = np.minimum(rescaled, blockwise.norms(x, block, np.inf))
        means[overflowed] = capped[overflowed]
    return means


def _pack_signs(x: np.ndarray, out: np.ndarray) -> None:
    """Sign bits of ``x`` into the ``ceil(d / 8)`` bytes ``out``; NaN/Inf raise."""
    if not kernels.backend().sign_pack(x, out):
        raise_non_finite(x)


def _add_signs(bits: np.ndarray, scales: np.ndarray, block: int, d: int, dtype, acc) -> None:
    check_padding(bits, d)
    kernels.backend().sign_unpack(bits, scales.astype(dtype), block, acc, True)


def _unpack_signs(bits: np.ndarray, scales: np.ndarray, block: int, d: int, dtype,
                  out=None) -> np.ndarray:
    check_padding(bits, d)
    out = output_array(out, d, dtype)
    kernels.backend().sign_unpack(bits, scales.astype(dtype), block, out)
    return out


class Sign(Compressor):
    """sign(x) with sign(0) = +1, one bit a coordinate (biased, not a contraction)."""

    name = "sign"
    code = 2
    kernel_checks_finite = True
    writes_in_place = True

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return d

    def write_body(self, x, rng, out):
        _pack_signs(x, out)
        return b""

    def decode_body(self, extra, body, d, dtype, out=None):
        self._check_body_size(body, d)
        return _unpack_signs(body, np.ones(1), max(d, 1), d, dtype, out)

    def accumulates(self, dtype) -> bool:
        return True

    def add_body(self, extra, body, d, dtype, acc):
        self._check_body_size(body, d)
        _add_signs(body, np.ones(1), max(d, 1), d, dtype, acc)

    def packed_bits(self, buf, d: int, dtype=np.float32) -> np.ndarray:
        """The validated body of a sign payload of a ``dtype`` vector: bit j set where
        coordinate j is negative."""
        _, body = self.split(buf, d, dtype)
        self._check_body_size(body, d)
        check_padding(body, d)
        return body


class ScaledSign(Compressor):
    """``(‖x_B‖₁/|B|)·sign(x_B)`` per block B (biased; contraction δ = 1/b).

    Notes
    -----
    ‖C(x) − x‖² = ‖x‖² − ‖x‖₁²/b per block ≤ (1 − 1/b)‖x‖² (Karimireddy et al. 2019, Lemma 8).
    Every finite input is accepted: the scale mean|x_B| ≤ max|x_B| is computed without overflow
    (`block_mean_abs`) and decoded as ±scale exactly, up to the largest finite float.
    """

    name = "scaled_sign"
    code = 3
    kernel_checks_finite = True
    writes_in_place = True

    def __init__(self, block: int = 0):
        if int(block) != block or block < 0:
            raise ValueError(f"block={block!r} must be an integer ≥ 0 (0 = whole vector)")
        self.block = int(block)

    def spec(self) -> str:
        return self.name + (f":block={self.block}" if self.block else "")

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return d + value_bits(dtype) * n_blocks(d, self.block)

    def delta(self, d: int) -> float:
        return 1.0 / max(1, d if self.block <= 0 else min(self.block, d))

    def write_body(self, x, rng, out):
        block = blockwise.effective_block(x.size, self.block)
        head = blockwise.write_scalars(block_mean_abs(x, block).astype(x.dtype), out)
        _pack_signs(x, out[head:])
        return b""

    def _split_body(self, body, d, dtype):
        block, scales, bits = blockwise.split_block_scalars(body, d, self.block, dtype,
                                                            "block scales")
        self._check_body_size(bits, d)
        return bits, scales, block

    def decode_body(self, extra, body, d, dtype, out=None):
        bits, scales, block = self._split_body(body, d, dtype)
        return _unpack_signs(bits, scales, block, d, dtype, out)

    def accumulates(self, dtype) -> bool:
        return True

    def add_body(self, extra, body, d, dtype, acc):
        bits, scales, block = self._split_body(body, d, dtype)
        _add_signs(bits, scales, block, d, dtype, acc)
