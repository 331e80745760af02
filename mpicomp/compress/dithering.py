"""Random dithering and its special cases: `Dither`, `QSGD`, `TernGrad`, `NaturalDither`.

For each block B with norm ν = ‖x_B‖_p (sent in the input's precision, rounded up) the level of
coordinate j is ``ℓ_j = ⌊s|x_j|/ν + u_j⌋`` with u_j uniform, and ``C(x)_j = ν·sign(x_j)·ℓ_j/s``.
Each coordinate travels as one ``1 + ⌈log₂(s+1)⌉``-bit field (level, then a sign bit that is set
only for non-zero levels); with ``coder="elias"`` in QSGD's Elias-γ stream, with
``coder="golomb"`` in the vector source code of `coding` (counts, then Golomb-coded runs).

References
----------
Alistarh et al., "QSGD: Communication-efficient SGD via gradient quantization and encoding",
NeurIPS 2017. Wen et al., "TernGrad: Ternary gradients to reduce communication in distributed
deep learning", NeurIPS 2017. Mishchenko et al., "Distributed learning with compressed gradient
differences", 2019 (p-quantization). Horváth et al., "Natural compression for distributed deep
learning", 2019 (natural dithering).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from . import blockwise, coding, kernels
from .base import Compressor, DecodeError, n_blocks, value_bits
from .bitpack import check_padding, field_width, pack_fields, unpack_fields
from .counter_rng import draw_key, words32

CODERS = ("dense", "elias", "golomb")
NNZ = struct.Struct("<I")


def _check_p(p) -> float:
    text = str(p).strip().lower()
    try:
        value = math.inf if text in ("inf", "∞") else float(text)
    except ValueError:
        value = None
    if value not in (1.0, 2.0, math.inf):
        raise ValueError(f"unknown norm p={p!r}: choose one of 1, 2, inf")
    return value


def _check_s(s) -> int:
    if int(s) != s or s < 1:
        raise ValueError(f"number of levels s={s!r} must be an integer ≥ 1")
    return int(s)


def level_factors(s: int, pow2: bool) -> np.ndarray:
    """f(ℓ) for ℓ = 0 … s: ℓ (dithering), or 2^(ℓ−s) with f(0) = 0 (natural dithering)."""
    if pow2:
        return np.concatenate([[0.0], 2.0 ** np.arange(1 - s, 1)])
    return np.arange(s + 1, dtype=np.float64)


def decode_signed_levels(op, fields, nu, block, d, dtype, out, pow2: bool, accumulate: bool = False):
    """Values ±f(ℓ)·ν_B of packed signed-level fields (shared by the dithering family), with f
    from `level_factors`; ``nu`` is ν/s per block for dithering, ν for natural dithering.
    ``accumulate`` (kernels only): add them to the float64 ``out`` instead."""
    nbits = d * op.width
    op._check_body_size(fields, nbits)
    check_padding(fields, nbits)
    out = op._output(out, d, dtype)
    if kernels.active():
        round32 = dtype == np.float32
        bad = kernels.signed_level_values(fields, nu, block, op.s, op.width, pow2, out, accumulate, round32)
    else:
        f = unpack_fields(fields, op.width, d).astype(np.int64)
        lev = f & ((1 << (op.width - 1)) - 1)
        neg = (f >> (op.width - 1)).astype(bool)
        invalid = (lev > op.s) | (neg & (lev == 0))
        bad = int(np.argmax(invalid)) if invalid.any() else -1
        val = level_factors(op.s, pow2)[np.minimum(lev, op.s)] * blockwise.per_element(nu, block, d)
        out[:] = np.where(neg, -val, val)
    if bad >= 0:
        raise DecodeError(f"{op.spec()}: corrupted field at coordinate {bad}")
    return out


class Dither(Compressor):
    """Random dithering with ``s`` levels in the ℓ_p norm of each block (unbiased).

    Parameters
    ----------
    p : {1, 2, inf}
        Norm that scales each block.
    s : int
        Number of non-zero levels (s = 1 is DIANA's p-quantization).
    block : int
        Block length; 0 means the whole vector is one block.
    coder : {"dense", "elias", "golomb"}
        Fixed-width fields; QSGD's Elias-γ stream of the non-zero levels; or the vector source
        code of the signed levels (`coding`: Elias-γ counts, Golomb-coded runs; close to the
        empirical entropy). The last two have data-dependent sizes.

    Notes
    -----
    Variance: ω = √b − 1 (p = 2) and (√b − 1)/2 (p = ∞) for s = 1 (tight, DIANA's α_p), else
    min(b/s², √b/s) for p = 2 (QSGD Lemma 3.1), min(b/(4s²), (1 + √b)/(2s)) for p = ∞ and
    min(b²/(4s²), b/s) for p = 1, with b the block length. The uniforms have 2⁻³² resolution,
    so the rounding probability of each level is exact to within 2⁻³² (up to the float64
    round-off of ``t + u``).
    """

    name = "dither"
    code = 4
    unbiased = True
    randomised = True
    kernel_checks_finite = True

    def __init__(self, p=2, s: int = 1, block: int = 0, coder: str = "dense"):
        self.p = _check_p(p)
        self.s = _check_s(s)
        if int(block) != block or block < 0:
            raise ValueError(f"block={block!r} must be an integer ≥ 0 (0 = whole vector)")
        self.block = int(block)
        if coder not in CODERS:
            raise ValueError(f"unknown coder {coder!r}: choose one of {', '.join(CODERS)}")
        self.coder = coder
        self.fixed_size = coder == "dense"
        self.extra_header = NNZ.size if coder == "elias" else 0
        self.level_bits = field_width(self.s)
        self.width = 1 + self.level_bits

    def spec(self) -> str:
        p = "inf" if math.isinf(self.p) else int(self.p)
        parts = [f"p={p}", f"s={self.s}"] + ([f"block={self.block}"] if self.block else [])
        parts += [f"coder={self.coder}"] if self.coder != "dense" else []
        return f"{self.name}:{','.join(parts)}"

    # -- sizes -------------------------------------------------------------------------------
    def body_bits(self, d: int, dtype=np.float32) -> int:
        if self.coder != "dense":
            raise ValueError(f"{self.spec()} has a data-dependent size: see Payload.nbits")
        return value_bits(dtype) * n_blocks(d, self.block) + d * self.width

    def max_body_bits(self, d: int, dtype=np.float32) -> int:
        if self.coder == "dense":
            return self.body_bits(d, dtype)
        if self.coder == "golomb":
            return value_bits(dtype) * n_blocks(d, self.block) + coding.golomb_max_bits(d, 2 * self.s + 1)
        # every coordinate non-zero: γ(1) = 1 bit gap, 1 sign bit, γ(s) level bits
        return value_bits(dtype) * n_blocks(d, self.block) + d * (2 + 2 * self.level_bits - 1)

    def omega(self, d: int) -> float:
        b = max(1, d if self.block <= 0 else min(self.block, d))
        s = self.s
        if math.isinf(self.p):
            return (math.sqrt(b) - 1) / 2 if s == 1 else min(b / (4 * s * s), (1 + math.sqrt(b)) / (2 * s))
        if self.p == 2:
            return math.sqrt(b) - 1 if s == 1 else min(b / s**2, math.sqrt(b) / s)
        return b - 1 if s == 1 else min(b * b / (4 * s * s), b / s)

    # -- encode / decode ---------------------------------------------------------------------
    def _prepare(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Vector actually quantised (TernGrad clips it) and its block length."""
        return x, blockwise.effective_block(x.size, self.block)

    def _encode_body(self, x, rng):
        key = draw_key(rng)
        x, block = self._prepare(x)
        d = x.size
        nu = blockwise.round_up(blockwise.finite_norms(x, block, self.p), x.dtype)
        with np.errstate(divide="ignore"):
            scale = np.where(nu > 0, self.s / nu.astype(np.float64), 0.0)
        head = blockwise.scalar_bytes(nu)
        if self.coder != "dense" and not kernels.active():
            return self._coded_body(head, *self._levels(x, scale, block, key))
        fields = np.zeros(-(-d * self.width // 8), dtype=np.uint8)
        if kernels.active():
            kernels.dither_levels(x, scale, block, self.s, np.uint64(key), self.width, fields)
        else:
            levels, negative = self._levels(x, scale, block, key)
            fields = pack_fields(levels | (negative.astype(np.uint32) << (self.width - 1)), self.width)
        if self.coder == "golomb":
            sym = np.empty(d, dtype=np.int32)
            coding.symbols_from_fields(fields, d, self.width, sym)
            return self._golomb_body(head, sym)
        if self.coder == "elias":
            stream = np.zeros(-(-(self.max_body_bits(d, x.dtype) - head.size * 8) // 8), dtype=np.uint8)
            nbits, nnz = coding.elias_from_fields(fields, d, self.width, stream)
            return NNZ.pack(nnz), [head, stream[: -(-nbits // 8)]], head.size * 8 + nbits
        return b"", [head, fields], head.size * 8 + d * self.width

    def _levels(self, x, scale, block, key):
        """Levels and sign flags, vectorised (the reference of `kernels.dither_levels`)."""
        t = np.abs(x).astype(np.float64) * blockwise.per_element(scale, block, x.size)
        lev = np.minimum((t + words32(key, x.size) * 2.0**-32).astype(np.int64), self.s)
        return lev.astype(np.uint32), (x < 0) & (lev > 0)

    def _coded_body(self, head, levels, negative):
        """The body of a variable-size coder from the levels and sign flags."""
        if self.coder == "golomb":
            return self._golomb_body(head, coding.symbols_of_levels(levels, negative))
        lv = levels.astype(np.int64)
        nbits = int(coding.elias_levels_bits(lv))
        stream = np.zeros(-(-nbits // 8), dtype=np.uint8)
        coding.elias_levels_encode(lv, negative.astype(np.uint8), stream)
        nnz = int(np.count_nonzero(lv))
        return NNZ.pack(nnz), [head, stream], head.size * 8 + nbits

    def _golomb_body(self, head, sym):
        d, n_symbols = sym.size, 2 * self.s + 1
        stream = np.zeros(-(-coding.golomb_max_bits(d, n_symbols) // 8), dtype=np.uint8)
        nbits = coding.golomb_encode(sym, n_symbols, stream)
        return b"", [head, stream[: -(-nbits // 8)]], head.size * 8 + nbits

    def _decode_body(self, extra, body, d, dtype, out=None):
        block, nu, fields = blockwise.split_block_scalars(body, d, self.block, dtype, "block norms")
        unit = nu / self.s  # values ±ℓ·(ν/s)
        if self.coder == "elias":
            return self._decode_elias(extra, fields, d, dtype, level_factors(self.s, False), unit, block, out)
        if self.coder == "golomb":
            return self._decode_golomb(fields, d, dtype, unit, block, out)
        return decode_signed_levels(self, fields, unit, block, d, dtype, out, pow2=False)

    def accumulates(self, dtype) -> bool:
        return self.coder == "dense"

    def _add_body(self, extra, body, d, dtype, acc):
        block, nu, fields = blockwise.split_block_scalars(body, d, self.block, dtype, "block norms")
        decode_signed_levels(self, fields, nu / self.s, block, d, dtype, acc, pow2=False, accumulate=True)

    def _decode_elias(self, extra, stream, d, dtype, factor, nu, block, out=None):
        (nnz,) = NNZ.unpack(extra)
        if nnz > d:
            raise DecodeError(f"{self.spec()}: header claims {nnz} non-zeros in dimension {d}")
        if 3 * nnz > stream.size * 8:  # an entry is at least γ(1), a sign bit and γ(1)
            raise DecodeError(
                f"{self.spec()}: header claims {nnz} non-zeros, the {stream.size}-byte Elias "
                f"stream holds at most {stream.size * 8 // 3}"
            )
        out = self._output(out, d, dtype)
        used = coding.elias_decode_values(stream, nnz, stream.size * 8, self.s, factor, nu, block, out)
        if used < 0:
            raise DecodeError(
                f"{self.spec()}: Elias stream truncated or malformed (a code past the end, a "
                f"position at or past d = {d}, or a level outside 1…{self.s})"
            )
        if -(-used // 8) != stream.size:
            raise DecodeError(
                f"{self.spec()}: Elias stream has {stream.size} bytes, its {nnz} codes use {used} bits"
            )
        check_padding(stream, used)
        return out

    def _decode_golomb(self, stream, d, dtype, unit, block, out=None):
        sym = np.empty(d, dtype=np.int32)
        used = coding.golomb_decode(stream, stream.size * 8, 2 * self.s + 1, sym)
        if used < 0:
            raise DecodeError(
                f"{self.spec()}: source-coded stream truncated or malformed (a code past the "
                f"end, symbol counts above d = {d}, or a run past the positions left)"
            )
        if -(-used // 8) != stream.size:
            raise DecodeError(f"{self.spec()}: source-coded stream has {stream.size} bytes, its codes "
                              f"use {used} bits")
        check_padding(stream, used)
        out = self._output(out, d, dtype)
        if kernels.active():
            coding.symbol_values(sym, unit, block, out)
            return out
        levels, negative = coding.levels_of_symbols(sym)
        val = levels * blockwise.per_element(unit, block, d)
        out[:] = np.where(negative, -val, val)
        return out


class QSGD(Dither):
    """QSGD: dithering in the ℓ2 norm with ``s`` levels (default 4), dense or Elias-coded."""

    name = "qsgd"
    code = 5

    def __init__(self, s: int = 4, block: int = 0, coder: str = "dense"):
        super().__init__(p=2, s=s, block=block, coder=coder)

    def spec(self) -> str:
        return super().spec().replace(":p=2,", ":", 1)


class TernGrad(Dither):
    """TernGrad: ℓ∞ dithering with s = 1 (levels −1, 0, +1 times the block maximum).

    Parameters
    ----------
    block : int
        Block length (0 = whole vector, i.e. per layer when a layer is passed).
    clip : float
        If > 0, first clip each block to ``|g_j| ≤ clip·σ_B`` (σ_B the block's standard
        deviation; the paper uses 2.5). Clipping makes the operator biased.
    pack : {"bits", "trits"}
        Two bits a coordinate, or base-3 packing of five ternary digits a byte (1.6 bits).

    Notes
    -----
    ω = ‖x‖₁‖x‖∞/‖x‖² − 1 ≤ (√b − 1)/2 without clipping.
    """

    name = "terngrad"
    code = 6
    PACKS = ("bits", "trits")

    def __init__(self, block: int = 0, clip: float = 0.0, pack: str = "bits"):
        super().__init__(p=math.inf, s=1, block=block)
        if not clip >= 0:
            raise ValueError(f"clip={clip!r} must be ≥ 0 (0 = no clipping)")
        if pack not in self.PACKS:
            raise ValueError(f"unknown pack {pack!r}: choose one of {', '.join(self.PACKS)}")
        self.clip = float(clip)
        self.pack = pack
        self.unbiased = self.clip == 0

    def spec(self) -> str:
        parts = ([f"block={self.block}"] if self.block else []) + (
            [f"clip={self.clip:g}"] if self.clip else []
        ) + ([f"pack={self.pack}"] if self.pack != "bits" else [])
        return "terngrad" + (":" + ",".join(parts) if parts else "")

    def body_bits(self, d: int, dtype=np.float32) -> int:
        if self.pack == "trits":
            return value_bits(dtype) * n_blocks(d, self.block) + 8 * -(-d // 5)
        return super().body_bits(d, dtype)

    def omega(self, d: int):
        return super().omega(d) if self.unbiased else None

    def accumulates(self, dtype) -> bool:
        return self.pack == "bits"

    def _prepare(self, x):
        x, block = super()._prepare(x)
        if not self.clip or x.size == 0:
            return x, block
        nb = -(-x.size // block)
        sigma = np.array([np.std(x[b * block : (b + 1) * block], dtype=np.float64) for b in range(nb)])
        bound = blockwise.per_element(self.clip * sigma, block, x.size)
        return np.clip(x, -bound, bound).astype(x.dtype), block

    def _encode_body(self, x, rng):
        if self.pack == "bits":
            return super()._encode_body(x, rng)
        key = draw_key(rng)
        x, block = self._prepare(x)
        nu = blockwise.round_up(blockwise.finite_norms(x, block, self.p), x.dtype)
        with np.errstate(divide="ignore"):
            scale = np.where(nu > 0, 1.0 / nu.astype(np.float64), 0.0)
        levels, negative = self._levels(x, scale, block, key)
        trits = levels.astype(np.int64) * np.where(negative, -1, 1) + 1  # 0, 1, 2
        padded = np.ones(-(-x.size // 5) * 5, dtype=np.int64)
        padded[: x.size] = trits
        packed = (padded.reshape(-1, 5) * (3 ** np.arange(5))).sum(axis=1).astype(np.uint8)
        head = blockwise.scalar_bytes(nu)
        return b"", [head, packed], self.body_bits(x.size, x.dtype)

    def _decode_body(self, extra, body, d, dtype, out=None):
        if self.pack == "bits":
            return super()._decode_body(extra, body, d, dtype, out)
        block, nu, packed = blockwise.split_block_scalars(body, d, self.block, dtype, "block norms")
        self._check_body_size(packed, 8 * -(-d // 5))
        if (packed > 242).any():
            raise DecodeError(f"{self.spec()}: byte above 242 is no base-3 group of five trits")
        digits = (packed.astype(np.int64)[:, None] // (3 ** np.arange(5))) % 3
        flat = digits.ravel()
        if (flat[d:] != 1).any():
            raise DecodeError(f"{self.spec()}: non-zero padding trits: corrupted buffer")
        trit = flat[:d] - 1
        return (trit * blockwise.per_element(nu, block, d)).astype(dtype)


class NaturalDither(Compressor):
    """Natural dithering: levels {0, 2^(1−s), …, ½, 1}·‖x_B‖_p with unbiased rounding.

    Notes
    -----
    ω = 1/8 + b^(1/r)·2^(1−s)·min(1, b^(1/r)·2^(1−s)), r = min(p, 2) (Horváth et al. 2019,
    Theorem 7). Level index L is sent in ⌈log₂(s+1)⌉ bits plus a sign bit. Between the
    levels 2^(L−s) and 2^(L+1−s) the rounding probability is the mantissa of y = |x|/ν over
    2⁵², decided exactly by an integer comparison with the coordinate's 32-bit word.
    """

    name = "natural_dither"
    code = 9
    unbiased = True
    randomised = True
    kernel_checks_finite = True

    def __init__(self, p=2, s: int = 8, block: int = 0):
        self.p = _check_p(p)
        self.s = _check_s(s)
        if self.s > 60:
            raise ValueError(f"s={s} levels: natural dithering supports s ≤ 60")
        if int(block) != block or block < 0:
            raise ValueError(f"block={block!r} must be an integer ≥ 0 (0 = whole vector)")
        self.block = int(block)
        self.width = 1 + field_width(self.s)

    def spec(self) -> str:
        p = "inf" if math.isinf(self.p) else int(self.p)
        return f"natural_dither:p={p},s={self.s}" + (f",block={self.block}" if self.block else "")

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return value_bits(dtype) * n_blocks(d, self.block) + d * self.width

    def omega(self, d: int) -> float:
        b = max(1, d if self.block <= 0 else min(self.block, d))
        r = min(self.p, 2.0)
        t = b ** (1 / r) * 2.0 ** (1 - self.s)
        return 1 / 8 + t * min(1.0, t)

    def _encode_body(self, x, rng):
        key = draw_key(rng)
        d = x.size
        block = blockwise.effective_block(d, self.block)
        nu = blockwise.round_up(blockwise.finite_norms(x, block, self.p), x.dtype)
        with np.errstate(divide="ignore"):
            inv = np.where(nu > 0, 1.0 / nu.astype(np.float64), 0.0)
        if kernels.active():
            fields = np.zeros(-(-d * self.width // 8), dtype=np.uint8)
            kernels.natural_dither_levels(x, inv, block, self.s, np.uint64(key), self.width, fields)
        else:
            y = np.minimum(np.abs(x).astype(np.float64) * blockwise.per_element(inv, block, d), 1.0)
            yb = y.view(np.uint64)
            lev = (yb >> np.uint64(52)).astype(np.int64) - 1023 + self.s
            w = words32(key, d).astype(np.uint64)
            top = lev >= 1
            up_top = (w << np.uint64(20)) < (yb & np.uint64((1 << 52) - 1))
            up_bottom = w * 2.0**-32 < y * 2.0 ** (self.s - 1)
            lev = np.where(top, lev + up_top, up_bottom).astype(np.uint32)
            neg = (x < 0) & (lev > 0)
            fields = pack_fields(lev | (neg.astype(np.uint32) << (self.width - 1)), self.width)
        head = blockwise.scalar_bytes(nu)
        return b"", [head, fields], self.body_bits(d, x.dtype)

    def _decode_body(self, extra, body, d, dtype, out=None):
        block, nu, fields = blockwise.split_block_scalars(body, d, self.block, dtype, "block norms")
        return decode_signed_levels(self, fields, nu, block, d, dtype, out, pow2=True)

    def accumulates(self, dtype) -> bool:
        return True

    def _add_body(self, extra, body, d, dtype, acc):
        block, nu, fields = blockwise.split_block_scalars(body, d, self.block, dtype, "block norms")
        decode_signed_levels(self, fields, nu, block, d, dtype, acc, pow2=True, accumulate=True)
