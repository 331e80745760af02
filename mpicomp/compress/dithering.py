"""Random dithering and its special cases: `Dither`, `QSGD`, `TernGrad`, `NaturalDither`.

For each block B with norm ν = ‖x_B‖_p (sent in the input's precision, rounded up) the level of
coordinate j is ``ℓ_j = ⌊s|x_j|/ν + u_j⌋`` with u_j uniform, and ``C(x)_j = ν·sign(x_j)·ℓ_j/s``.
Each coordinate travels as one ``1 + ⌈log₂(s+1)⌉``-bit field (level, then a sign bit that is set
only for non-zero levels); with ``coder="elias"`` in QSGD's Elias-γ stream, with
``coder="golomb"`` in the vector source code of `coding` (counts, then Golomb-coded runs). The
operator holds the `level_coders.LevelCoder` of its wire format and delegates to it.

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
from typing import ClassVar

import numpy as np

from . import blockwise, kernels
from .base import Compressor, DecodeError, n_blocks, value_bits
from .bitpack import packed_nbytes
from .counter_rng import draw_key
from .level_coders import CODERS, DenseCoder, LevelCoder, TritCoder
from .workspace import scratch


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


class DitherBase(Compressor):
    """The frame of the dithering family: per block B its norm ν = ‖x_B‖_p (sent first, in the
    input's precision, rounded up), then the signed level of every coordinate, in the wire
    format of the operator's ``level_coder``.

    Subclasses set ``level_coder`` and implement `_levels` (the level kernel) and `_unit` (the
    value of level factor 1 in a block of norm ν). With a fixed-size coder the body is written in
    place (`write_body`): the dense coder's fields are the level kernel's output itself.
    """

    unbiased = True
    randomised = True
    kernel_checks_finite = True
    level_coder: LevelCoder

    def __init__(self, p, s: int, block: int):
        self.p = _check_p(p)
        self.s = _check_s(s)
        if int(block) != block or block < 0:
            raise ValueError(f"block={block!r} must be an integer ≥ 0 (0 = whole vector)")
        self.block = int(block)

    @property
    def fixed_size(self) -> bool:
        return self.level_coder.fixed_size

    @property
    def writes_in_place(self) -> bool:
        return self.level_coder.fixed_size

    @property
    def extra_header(self) -> int:
        return self.level_coder.extra_header

    # -- sizes -------------------------------------------------------------------------------
    def body_bits(self, d: int, dtype=np.float32) -> int:
        if not self.fixed_size:
            raise ValueError(f"{self.spec()} has a data-dependent size: see Payload.nbits")
        return self.max_body_bits(d, dtype)

    def max_body_bits(self, d: int, dtype=np.float32) -> int:
        return value_bits(dtype) * n_blocks(d, self.block) + self.level_coder.max_bits(d)

    # -- encode / decode ---------------------------------------------------------------------
    def accumulates(self, dtype) -> bool:
        return self.level_coder.accumulates

    def write_body(self, x, rng, out):
        head = n_blocks(x.size, self.block) * x.itemsize
        if isinstance(self.level_coder, DenseCoder):  # the fields are the section
            nu = self._quantise(x, rng, out[head:])
        else:
            fields = scratch("dither fields", packed_nbytes(x.size, self.level_coder.width))
            nu = self._quantise(x, rng, fields)
            out[head:] = self.level_coder.encode(fields, x.size)[1]
        blockwise.write_scalars(nu, out)
        return b""

    def encode_body(self, x, rng):
        if self.writes_in_place:
            return super().encode_body(x, rng)
        fields = scratch("dither fields", packed_nbytes(x.size, self.level_coder.width))
        head = blockwise.scalar_bytes(self._quantise(x, rng, fields))
        extra, section, nbits = self.level_coder.encode(fields, x.size)
        return extra, [head, section], head.size * 8 + nbits

    def _quantise(self, x, rng, fields) -> np.ndarray:
        """Draw the key, write the packed signed-level fields of ``x`` into ``fields``; return
        the block norms as sent (in x's dtype, rounded up)."""
        key = draw_key(rng)
        block = blockwise.effective_block(x.size, self.block)
        nu, bound = self._norms(x, block)
        self._levels(x, nu, block, np.uint64(key), fields, bound)
        return nu

    def _norms(self, x, block) -> tuple[np.ndarray, np.ndarray | None]:
        """(block norms as sent, None): TernGrad's clipping also returns its bounds."""
        return blockwise.round_up(blockwise.finite_norms(x, block, self.p), x.dtype), None

    def decode_body(self, extra, body, d, dtype, out=None):
        block, unit, section = self._split(body, d, dtype)
        try:
            return self.level_coder.decode(extra, section, d, dtype, unit, block, out)
        except DecodeError as exc:
            raise self._named(exc) from exc

    def add_body(self, extra, body, d, dtype, acc):
        block, unit, section = self._split(body, d, dtype)
        try:
            self.level_coder.add(extra, section, d, dtype, unit, block, acc)
        except DecodeError as exc:
            raise self._named(exc) from exc

    def _split(self, body, d, dtype) -> tuple[int, np.ndarray, np.ndarray]:
        """(block length, each block's `_unit`, the level section) of a body."""
        block, nu, section = blockwise.split_block_scalars(body, d, self.block, dtype,
                                                           "block norms")
        return block, self._unit(nu), section

    def _prepare(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Vector actually quantised (TernGrad clips it) and its block length."""
        return x, blockwise.effective_block(x.size, self.block)

    def _levels(self, x, nu, block, key, out, bound=None) -> None:  # pragma: no cover
        """The packed signed-level fields of ``x`` with block norms ``nu`` into ``out`` (every
        byte written); ``bound``: clip each block to ±bound first (TernGrad)."""
        raise NotImplementedError

    def _unit(self, nu: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """The value of level factor 1 in each block, from the block norms."""
        raise NotImplementedError


class Dither(DitherBase):
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

    def __init__(self, p=2, s: int = 1, block: int = 0, coder: str = "dense"):
        super().__init__(p, s, block)
        if coder not in CODERS:
            raise ValueError(f"unknown coder {coder!r}: choose one of {', '.join(CODERS)}")
        self.coder = coder
        self.level_coder = CODERS[coder](self.s)

    def spec(self) -> str:
        p = "inf" if math.isinf(self.p) else int(self.p)
        parts = [f"p={p}", f"s={self.s}"] + ([f"block={self.block}"] if self.block else [])
        parts += [f"coder={self.coder}"] if self.coder != "dense" else []
        return f"{self.name}:{','.join(parts)}"

    def omega(self, d: int) -> float:
        b = max(1, d if self.block <= 0 else min(self.block, d))
        s = self.s
        if math.isinf(self.p):
            return ((math.sqrt(b) - 1) / 2 if s == 1
                    else min(b / (4 * s * s), (1 + math.sqrt(b)) / (2 * s)))
        if self.p == 2:
            return math.sqrt(b) - 1 if s == 1 else min(b / s**2, math.sqrt(b) / s)
        return b - 1 if s == 1 else min(b * b / (4 * s * s), b / s)

    def _levels(self, x, nu, block, key, out, bound=None):
        with np.errstate(divide="ignore"):
            scale = np.where(nu > 0, self.s / nu.astype(np.float64), 0.0)
        kernels.backend().dither_levels(x, scale, block, self.s, key, self.level_coder.width, out,
                                        bound)

    def _unit(self, nu):
        return nu / self.s  # values ±ℓ·(ν/s)


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
    #: the level coder of each ``pack``
    PACKS: ClassVar[dict[str, type[LevelCoder]]] = {"bits": DenseCoder, "trits": TritCoder}

    def __init__(self, block: int = 0, clip: float = 0.0, pack: str = "bits"):
        super().__init__(p=math.inf, s=1, block=block)
        if not clip >= 0:
            raise ValueError(f"clip={clip!r} must be ≥ 0 (0 = no clipping)")
        if pack not in self.PACKS:
            raise ValueError(f"unknown pack {pack!r}: choose one of {', '.join(self.PACKS)}")
        self.clip = float(clip)
        self.pack = pack
        self.level_coder = self.PACKS[pack](self.s)

    @property
    def unbiased(self) -> bool:
        return self.clip == 0

    def spec(self) -> str:
        parts = ([f"block={self.block}"] if self.block else []) + (
            [f"clip={self.clip:g}"] if self.clip else []
        ) + ([f"pack={self.pack}"] if self.pack != "bits" else [])
        return "terngrad" + (":" + ",".join(parts) if parts else "")

    def omega(self, d: int):
        return super().omega(d) if self.unbiased else None

    def _prepare(self, x):
        x, block = super()._prepare(x)
        if not self.clip or x.size == 0:
            return x, block
        bound = kernels.backend().clip_bounds(x, block, self.clip)
        limit = blockwise.per_element(bound, block, x.size)
        return np.clip(x, -limit, limit).astype(x.dtype), block

    def _norms(self, x, block):
        """The ℓ∞ norms of the clipped blocks, and the clip bounds (None without clipping).

        Without building the clipped vector: a block's norm is max|x_B| if no coordinate
        exceeds the bound, else the bound rounded to x's dtype (the value clipped coordinates
        take, never below max|x_B| over the others). Non-finite bounds (NaN/Inf input, or a
        σ that overflows) take the clipped vector's norms, with their errors (an infinite
        bound clips nothing).
        """
        if not self.clip or x.size == 0:
            return super()._norms(x, block)
        bound = kernels.backend().clip_bounds(x, block, self.clip)
        if not np.isfinite(bound).all():
            return super()._norms(self._prepare(x)[0], block)[0], bound
        largest = blockwise.norms(x, block, math.inf)
        with np.errstate(over="ignore"):  # a bound beyond float32's range clips nothing
            clipped = bound.astype(x.dtype).astype(np.float64)
        nu = np.where(largest > bound, clipped, largest)
        return blockwise.round_up(nu, x.dtype), bound


class NaturalDither(DitherBase):
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

    def __init__(self, p=2, s: int = 8, block: int = 0):
        super().__init__(p, s, block)
        if self.s > 60:
            raise ValueError(f"s={s} levels: natural dithering supports s ≤ 60")
        self.level_coder = DenseCoder(self.s, pow2=True)

    def spec(self) -> str:
        p = "inf" if math.isinf(self.p) else int(self.p)
        return f"natural_dither:p={p},s={self.s}" + (f",block={self.block}" if self.block else "")

    def omega(self, d: int) -> float:
        b = max(1, d if self.block <= 0 else min(self.block, d))
        r = min(self.p, 2.0)
        t = b ** (1 / r) * 2.0 ** (1 - self.s)
        return 1 / 8 + t * min(1.0, t)

    def _levels(self, x, nu, block, key, out, bound=None):
        with np.errstate(divide="ignore"):
            inv = np.where(nu > 0, 1.0 / nu.astype(np.float64), 0.0)
        kernels.backend().natural_dither_levels(x, inv, block, self.s, key, self.level_coder.width,
                                                out)

    def _unit(self, nu):
        return nu  # values ±2^(L−s)·ν
