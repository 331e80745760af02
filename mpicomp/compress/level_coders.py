"""How the dithering family's signed levels travel: one `LevelCoder` per wire format.

A coder takes the packed signed-level fields of a vector (``level | sign << (width − 1)``, one
per coordinate, ``width = 1 + ⌈log₂(s+1)⌉``, as the level kernels write them) and writes the
level section of the body, which follows the block norms. Decoding gives ``±f(ℓ)·u_B`` with
``u_B`` the unit of the coordinate's block and f(ℓ) = ℓ, or 2^(ℓ−s) with f(0) = 0 for natural
dithering's power-of-two levels (`DenseCoder` only).

The coders raise DecodeErrors without the operator's spec; the operator adds it.
"""

from __future__ import annotations

import struct
from typing import ClassVar

import numpy as np

from . import blockwise, coding, kernels
from .base import DecodeError, check_body_size, output_array
from .bitpack import check_padding, field_width, unpack_fields

#: the header field of `EliasCoder`: the count of non-zero levels
NNZ = struct.Struct("<I")


class LevelCoder:
    """The level section of ``s``-level signed fields (abstract).

    Attributes
    ----------
    s : int
        Number of non-zero levels.
    width : int
        Bits of one signed-level field: ``1 + ⌈log₂(s+1)⌉``.
    """

    #: the ``coder=`` value that selects it
    name: ClassVar[str] = ""
    #: whether the section has `max_bits` bits for every vector
    fixed_size: ClassVar[bool] = False
    #: bytes of the coder's header fields
    extra_header: ClassVar[int] = 0
    #: whether `add` decodes straight into a float64 sum
    accumulates: ClassVar[bool] = False

    def __init__(self, s: int):
        self.s = s
        self.width = 1 + field_width(s)

    def max_bits(self, d: int) -> int:
        """Largest bit count of the section for ``d`` coordinates (its size when fixed_size)."""
        raise NotImplementedError  # pragma: no cover

    def encode(self, fields: np.ndarray, d: int) -> tuple[bytes, np.ndarray, int]:
        """(header fields, section bytes, section bits) of the ``d`` packed ``fields``."""
        raise NotImplementedError  # pragma: no cover

    def decode(self, extra: bytes, section: np.ndarray, d: int, dtype, unit: np.ndarray,
               block: int, out: np.ndarray | None = None) -> np.ndarray:
        """The ``d`` values ``±f(ℓ)·unit[j // block]`` of ``dtype``, into ``out`` if given;
        raises DecodeError."""
        raise NotImplementedError  # pragma: no cover

    def add(self, extra: bytes, section: np.ndarray, d: int, dtype, unit: np.ndarray, block: int,
            acc: np.ndarray) -> None:
        """``acc += decode(...)`` in one pass (coders whose `accumulates` is True)."""
        raise NotImplementedError  # pragma: no cover


class DenseCoder(LevelCoder):
    """The fields as they are: ``width`` bits a coordinate (``coder=dense``)."""

    name = "dense"
    fixed_size = True
    accumulates = True

    def __init__(self, s: int, pow2: bool = False):
        super().__init__(s)
        self.pow2 = pow2

    def max_bits(self, d):
        return d * self.width

    def encode(self, fields, d):
        return b"", fields, d * self.width

    def decode(self, extra, section, d, dtype, unit, block, out=None):
        out = output_array(out, d, dtype)
        self._values(section, d, unit, block, out, accumulate=False, round32=False)
        return out

    def add(self, extra, section, d, dtype, unit, block, acc):
        self._values(section, d, unit, block, acc, accumulate=True, round32=dtype == np.float32)

    def _values(self, section, d, unit, block, out, accumulate, round32):
        check_body_size(section, self.max_bits(d))
        check_padding(section, self.max_bits(d))
        bad = kernels.backend().signed_level_values(section, unit, block, self.s, self.width,
                                                    self.pow2, out, accumulate, round32)
        if bad >= 0:
            raise DecodeError(f"corrupted field at coordinate {bad}")


class EliasCoder(LevelCoder):
    """QSGD's Elias stream (`coding`): per non-zero level γ(gap), sign bit, γ(level); the
    non-zero count travels in the header (``coder=elias``)."""

    name = "elias"
    extra_header = NNZ.size

    def max_bits(self, d):
        # every coordinate non-zero: γ(1) = 1 bit gap, 1 sign bit, γ(s) level bits
        return d * (2 + 2 * (self.width - 1) - 1)

    def encode(self, fields, d):
        stream = np.zeros(-(-self.max_bits(d) // 8), dtype=np.uint8)
        nbits, nnz = coding.elias_from_fields(fields, d, self.width, stream)
        return NNZ.pack(nnz), stream[: -(-nbits // 8)], nbits

    def decode(self, extra, section, d, dtype, unit, block, out=None):
        (nnz,) = NNZ.unpack(extra)
        if nnz > d:
            raise DecodeError(f"header claims {nnz} non-zeros in dimension {d}")
        if 3 * nnz > section.size * 8:  # an entry is at least γ(1), a sign bit and γ(1)
            raise DecodeError(
                f"header claims {nnz} non-zeros, the {section.size}-byte Elias "
                f"stream holds at most {section.size * 8 // 3}"
            )
        out = output_array(out, d, dtype)
        factors = np.arange(self.s + 1, dtype=np.float64)
        used = coding.elias_decode_values(section, nnz, section.size * 8, self.s, factors, unit,
                                          block, out)
        if used < 0:
            raise DecodeError(
                f"Elias stream truncated or malformed (a code past the end, a "
                f"position at or past d = {d}, or a level outside 1…{self.s})"
            )
        if -(-used // 8) != section.size:
            raise DecodeError(
                f"Elias stream has {section.size} bytes, its {nnz} codes use {used} bits"
            )
        check_padding(section, used)
        return out


class GolombCoder(LevelCoder):
    """The vector source code of `coding` over the symbols of the signed levels: counts, then
    Golomb-coded runs (``coder=golomb``)."""

    name = "golomb"

    def __init__(self, s: int):
        super().__init__(s)
        self.n_symbols = 2 * s + 1

    def max_bits(self, d):
        return coding.golomb_max_bits(d, self.n_symbols)

    def encode(self, fields, d):
        sym = np.empty(d, dtype=np.int32)
        coding.symbols_from_fields(fields, d, self.width, sym)
        stream = np.zeros(-(-self.max_bits(d) // 8), dtype=np.uint8)
        nbits = coding.golomb_encode(sym, self.n_symbols, stream)
        return b"", stream[: -(-nbits // 8)], nbits

    def decode(self, extra, section, d, dtype, unit, block, out=None):
        sym = np.empty(d, dtype=np.int32)
        used = coding.golomb_decode(section, section.size * 8, self.n_symbols, sym)
        if used < 0:
            raise DecodeError(
                f"source-coded stream truncated or malformed (a code past the "
                f"end, symbol counts above d = {d}, or a run past the positions left)"
            )
        if -(-used // 8) != section.size:
            raise DecodeError(f"source-coded stream has {section.size} bytes, its codes "
                              f"use {used} bits")
        check_padding(section, used)
        out = output_array(out, d, dtype)
        kernels.backend().symbol_values(sym, unit, block, out)
        return out


class TritCoder(LevelCoder):
    """TernGrad's base-3 packing (``pack=trits``, s = 1): the trits ``ℓ·sign + 1 ∈ {0, 1, 2}``
    of five coordinates a byte, ``Σ_i trit_i·3^i``; missing coordinates of the last byte are
    trit 1 (level 0)."""

    name = "trits"
    fixed_size = True

    def max_bits(self, d):
        return 8 * -(-d // 5)

    def encode(self, fields, d):
        f = unpack_fields(fields, self.width, d).astype(np.int64)
        trits = (f & 1) * np.where(f >> 1, -1, 1) + 1  # 0, 1, 2
        padded = np.ones(-(-d // 5) * 5, dtype=np.int64)
        padded[:d] = trits
        packed = (padded.reshape(-1, 5) * (3 ** np.arange(5))).sum(axis=1).astype(np.uint8)
        return b"", packed, self.max_bits(d)

    def decode(self, extra, section, d, dtype, unit, block, out=None):
        check_body_size(section, self.max_bits(d))
        if (section > 242).any():
            raise DecodeError("byte above 242 is no base-3 group of five trits")
        digits = (section.astype(np.int64)[:, None] // (3 ** np.arange(5))) % 3
        flat = digits.ravel()
        if (flat[d:] != 1).any():
            raise DecodeError("non-zero padding trits: corrupted buffer")
        out = output_array(out, d, dtype)
        out[:] = (flat[:d] - 1) * blockwise.per_element(unit, block, d)
        return out


#: the coders of `dithering.Dither`'s ``coder`` parameter, by name
CODERS: dict[str, type[LevelCoder]] = {c.name: c for c in (DenseCoder, EliasCoder, GolombCoder)}
