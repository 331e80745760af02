"""Composition ``A+B``: a sparsifier A picks coordinates, operator B compresses what A keeps.

Wire body: A's index section (none for a shared-seed `RandK`) followed, without padding, by
B's body for the k kept values. When B has a data-dependent size, B's bit count travels in
the header (4 bytes) so the end of the stream is exact.
"""

from __future__ import annotations

import struct

import numpy as np

from .base import Compressor, DecodeError
from .bitpack import append_bits, bits_from, check_padding
from .sparse import Sparsifier, pack_indices

INNER_BITS = struct.Struct("<I")


class Composition(Compressor):
    """``C(x) = A_expand(B(x_S))`` with S the coordinates that sparsifier A keeps.

    Notes
    -----
    Unbiased if both are, with ω = ω_A ω_B + ω_A + ω_B. If A is a contraction (δ_A) the result
    is one with δ = δ_A δ_B (B biased, contraction δ_B) or δ = δ_A (1 − ω_B) (B unbiased with
    ω_B < 1), because ‖C(x) − x‖² = ‖x_{S^c}‖² + ‖B(x_S) − x_S‖².
    """

    name = "compose"
    code = 13

    def __init__(self, outer: Compressor, inner: Compressor):
        if not isinstance(outer, Sparsifier):
            raise ValueError(
                "in 'A+B' the first operator must be a sparsifier (topk, randk), "
                f"got {outer.spec()!r}"
            )
        if isinstance(inner, (Sparsifier, Composition)):
            raise ValueError(f"in 'A+B' the second operator must be dense, got {inner.spec()!r}")
        self.outer, self.inner = outer, inner
        self._len_field = 0 if inner.fixed_size else INNER_BITS.size

    @property
    def unbiased(self) -> bool:
        return self.outer.unbiased and self.inner.unbiased

    @property
    def randomised(self) -> bool:
        return self.outer.randomised or self.inner.randomised

    @property
    def fixed_size(self) -> bool:
        return self.inner.fixed_size

    @property
    def extra_header(self) -> int:
        return self.outer.extra_header + self.inner.extra_header + self._len_field

    def spec(self) -> str:
        return f"{self.outer.spec()}+{self.inner.spec()}"

    def min_length(self) -> int:
        """The sparsifier's: the dense operator sees only what it keeps."""
        return self.outer.min_length()

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return self.outer.index_section_bits(d) + self.inner.body_bits(self.outer.k_of(d), dtype)

    def max_body_bits(self, d: int, dtype=np.float32) -> int:
        return (self.outer.index_section_bits(d)
                + self.inner.max_body_bits(self.outer.k_of(d), dtype))

    def omega(self, d: int):
        if not self.unbiased:
            return None
        wa, wb = self.outer.omega(d), self.inner.omega(self.outer.k_of(d))
        return wa * wb + wa + wb

    def delta(self, d: int):
        da = self.outer.delta(d)
        if da is None:
            return None
        db = self.inner.delta(self.outer.k_of(d))
        if db is not None:
            return da * db
        wb = self.inner.omega(self.outer.k_of(d))
        return da * (1 - wb) if wb is not None and wb < 1 else None

    def encode_body(self, x, rng):
        idx, extra_a = self.outer.select(x, rng)
        extra_b, body_b, bits_b = self.inner.encode_body(np.ascontiguousarray(x[idx]), rng)
        if isinstance(body_b, (list, tuple)):
            body_b = np.concatenate(body_b)
        length = INNER_BITS.pack(bits_b) if self._len_field else b""
        extra = extra_a + extra_b + length
        if self.outer.shared:
            return extra, body_b, bits_b
        section, nib = pack_indices(idx, x.size)
        return extra, append_bits(section, nib, body_b, bits_b), nib + bits_b

    def decode_body(self, extra, body, d, dtype, out=None):
        k = self.outer.k_of(d)
        na = self.outer.extra_header
        extra_a, extra_b = extra[:na], extra[na : na + self.inner.extra_header]
        nib = self.outer.index_section_bits(d)
        if self._len_field:
            (bits_b,) = INNER_BITS.unpack(extra[-self._len_field :])
        else:
            bits_b = self.inner.body_bits(k, dtype)
        self._check_body_size(body, nib + bits_b)
        check_padding(body, nib + bits_b)
        idx = self.outer.indices_from(extra_a, body, d)
        inner_body = bits_from(body, nib)[: -(-bits_b // 8)]
        try:
            values = self.inner.decode_body(extra_b, inner_body, k, dtype)
        except DecodeError as exc:
            raise self._named(exc) from exc
        return self.outer.expand(idx, values, d, dtype, out)
