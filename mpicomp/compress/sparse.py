"""Sparsifiers: `TopK` (biased, δ = k/d) and `RandK` (unbiased, ω = d/k − 1).

The body is the kept values (input precision) followed by the index section: whichever is
smaller of ``k`` packed indices of ``⌈log₂ d⌉`` bits or a ``d``-bit bitmap (both sides know k
and d, so no flag is sent). `RandK` with ``shared=True`` sends no indices: the 64-bit key that
picks them travels in the header, and ranks that draw it from a generator in the same state
choose the same coordinates.

References
----------
Stich, Cordonnier, Jaggi, "Sparsified SGD with memory", NeurIPS 2018.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from . import kernels
from .base import Compressor, DecodeError, non_finite_decoded, value_bits
from .bitpack import append_bits, bits_from, check_padding, pack_fields, unpack_fields
from .counter_rng import draw_key

KEY = struct.Struct("<Q")
SAMPLE = 16384


def index_width(d: int) -> int:
    """Bits of one packed index into a vector of dimension d: ⌈log₂ d⌉ (at least 1)."""
    return max(1, (int(d) - 1).bit_length())


def index_bits(k: int, d: int) -> int:
    """Bits of the index section: min(k·⌈log₂ d⌉, d)."""
    return min(k * index_width(d), d)


def pack_indices(idx: np.ndarray, d: int) -> tuple[np.ndarray, int]:
    """Sorted indices as packed ⌈log₂ d⌉-bit fields, or a bitmap when that is smaller."""
    k = idx.size
    if k * index_width(d) <= d:
        return pack_fields(idx.astype(np.uint32), index_width(d)), k * index_width(d)
    mask = np.zeros(d, dtype=bool)
    mask[idx] = True
    return np.packbits(mask, bitorder="little"), d


def unpack_indices(section: np.ndarray, k: int, d: int) -> np.ndarray:
    """Inverse of `pack_indices`; DecodeError unless k strictly increasing indices below d.

    Every bound is checked before an index is used: 0 ≤ k ≤ d, the section holds the
    ``index_bits(k, d)`` bits, a packed list strictly increases and ends below d, a bitmap has
    exactly k bits set among its d.
    """
    if not 0 <= k <= d:
        raise DecodeError(
            f"index section of k = {k} indices into dimension d = {d}: need 0 ≤ k ≤ d"
        )
    nbits = index_bits(k, d)
    if section.size * 8 < nbits:
        raise DecodeError(f"index section truncated: {section.size} bytes for {nbits} bits")
    if k * index_width(d) <= d:
        idx = unpack_fields(section, index_width(d), k).astype(np.int64)
        steps = np.diff(idx)
        if (steps <= 0).any():
            i = int(np.argmax(steps <= 0)) + 1
            raise DecodeError(
                f"corrupted index section: entry {i} ({idx[i]}) does not exceed entry {i - 1} "
                f"({idx[i - 1]}); indices must strictly increase"
            )
        if idx.size and idx[-1] >= d:
            raise DecodeError(f"corrupted index section: index {idx[-1]} is not below d = {d}")
        return idx
    mask = np.unpackbits(section[: -(-d // 8)], count=d, bitorder="little")
    idx = np.flatnonzero(mask)
    if idx.size != k:
        raise DecodeError(f"corrupted index bitmap: {idx.size} bits set, expected k = {k}")
    return idx


def top_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest |x_j|, ascending; ties at the threshold go to the lowest indices.

    For long vectors a strided sample of |x| bounds the threshold from below, one pass collects
    the candidates above it and the exact selection runs on those; the result is the same set
    as the exact selection over the whole vector.
    """
    d = x.size
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k == d:
        return np.arange(d, dtype=np.int64)
    cand = None
    if d > 8 * SAMPLE:
        step = d // SAMPLE
        sample = np.abs(x[::step])
        expect = sample.size * k / d
        above = int(2 * expect + 6 * math.sqrt(expect) + 16)
        if above < sample.size:
            t0 = np.partition(sample, sample.size - above)[sample.size - above]
            buf = np.empty(min(d, 8 * k + 4096), dtype=np.int64)
            n = kernels.backend().indices_at_least(x, t0, buf)
            if k <= n <= buf.size:
                cand = buf[:n]
    if cand is None:
        mags = np.abs(x)
        t = np.partition(mags, d - k)[d - k]
        cand = np.flatnonzero(mags >= t)
    mags = np.abs(x[cand])
    t = np.partition(mags, mags.size - k)[mags.size - k]
    strict = cand[mags > t]
    ties = cand[mags == t][: k - strict.size]
    return np.sort(np.concatenate([strict, ties]))


class Sparsifier(Compressor):
    """Keeps ``k`` coordinates; ``k`` ≥ 1 is a count, 0 < k < 1 a fraction of d (rounded, ≥ 1)."""

    #: whether the indices come from a key in the header instead of the body (`RandK`)
    shared: bool = False

    def __init__(self, k: float = 0.01):
        if not k > 0:
            raise ValueError(f"k={k!r} must be > 0: a count (≥ 1) or a fraction of d (< 1)")
        if k >= 1 and int(k) != k:
            raise ValueError(f"k={k!r}: a count must be an integer (or give a fraction < 1)")
        self.k = float(k)

    @property
    def extra_header(self) -> int:
        return KEY.size if self.shared else 0

    def k_of(self, d: int) -> int:
        """Number of kept coordinates for dimension d (ValueError if k > d)."""
        if self.k < 1:
            return 0 if d == 0 else max(1, int(round(self.k * d)))
        if self.k > d:
            raise ValueError(f"{self.spec()}: k={int(self.k)} exceeds the dimension d={d}")
        return int(self.k)

    def min_length(self) -> int:
        """``k`` for a count (it keeps that many), 0 for a fraction (it fits any length)."""
        return int(self.k) if self.k >= 1 else 0

    def spec(self) -> str:
        k = f"{self.k:g}" if self.k < 1 else str(int(self.k))
        return f"{self.name}:k={k}" + (",shared=1" if self.shared else "")

    def index_section_bits(self, d: int) -> int:
        return 0 if self.shared else index_bits(self.k_of(d), d)

    def body_bits(self, d: int, dtype=np.float32) -> int:
        return self.k_of(d) * value_bits(dtype) + self.index_section_bits(d)

    # -- selection, shared with Composition ----------------------------------------------------
    def select(self, x: np.ndarray, rng) -> tuple[np.ndarray, bytes]:
        """Sorted kept indices and this operator's extra header bytes."""
        raise NotImplementedError

    def indices_from(self, extra: bytes, section: np.ndarray, d: int) -> np.ndarray:
        return unpack_indices(section, self.k_of(d), d)

    def expand(self, idx: np.ndarray, values: np.ndarray, d: int, dtype, out=None) -> np.ndarray:
        """Dense vector with ``values`` at ``idx`` (scaled by d/k for RandK), into ``out``."""
        if out is None:
            out = np.zeros(d, dtype=dtype)
        else:
            out.fill(0)
        out[idx] = values
        return out

    def encode_body(self, x, rng):
        idx, extra = self.select(x, rng)
        vals = x[idx].astype(x.dtype.newbyteorder("<")).view(np.uint8)
        nvb = idx.size * value_bits(x.dtype)
        if self.shared:
            return extra, vals, nvb
        section, nib = pack_indices(idx, x.size)
        return extra, append_bits(vals, nvb, section, nib), nvb + nib

    def decode_body(self, extra, body, d, dtype, out=None):
        try:
            k = self.k_of(d)
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc
        nbits = self.body_bits(d, dtype)
        self._check_body_size(body, nbits)
        check_padding(body, nbits)
        nvb = k * value_bits(dtype)
        idx = self.indices_from(extra, bits_from(body, nvb), d)
        vals = body[: nvb // 8].view(dtype.newbyteorder("<")).astype(dtype)
        if not np.isfinite(vals).all():
            raise non_finite_decoded(self.spec(), vals, "kept value", idx)
        return self.expand(idx, vals, d, dtype, out)


class TopK(Sparsifier):
    """The k largest-magnitude coordinates (biased, contraction δ = k/d)."""

    name = "topk"
    code = 11

    def delta(self, d: int) -> float:
        return self.k_of(d) / d if d else 1.0

    def select(self, x, rng):
        return top_indices(x, self.k_of(x.size)), b""


class RandK(Sparsifier):
    """k uniformly random coordinates scaled by d/k (unbiased, ω = d/k − 1).

    Encoding rejects an input whose kept value times d/k overflows the dtype (the message
    would not be finite), naming the coordinate; decoding rejects such a payload.

    Parameters
    ----------
    k : float
        Count (≥ 1) or fraction of d (< 1).
    shared : bool
        Send the 64-bit key instead of the indices; pass every rank a generator in the same
        state and they all keep the same coordinates.
    """

    name = "randk"
    code = 12
    unbiased = True
    randomised = True

    def __init__(self, k: float = 0.01, shared: bool = False):
        self.shared = bool(int(shared))
        super().__init__(k)

    def omega(self, d: int) -> float:
        return d / self.k_of(d) - 1 if d else 0.0

    def _indices(self, key: int, d: int) -> np.ndarray:
        """A uniform random k-subset of range(d), sorted, as a pure function of ``key``."""
        gen = np.random.Generator(np.random.PCG64(key))
        return np.sort(gen.choice(d, size=self.k_of(d), replace=False, shuffle=False))

    @staticmethod
    def scaled(values: np.ndarray, d: int, dtype) -> np.ndarray:
        """The decoded values: ``values × d/k`` in float64, rounded to ``dtype`` (±Inf where
        that overflows; no warning)."""
        scale = d / values.size if values.size else 0.0
        with np.errstate(over="ignore"):
            return (values.astype(np.float64) * scale).astype(dtype)

    def select(self, x, rng):
        key = draw_key(rng)
        idx = self._indices(key, x.size)
        decoded = self.scaled(x[idx], x.size, x.dtype)
        if not np.isfinite(decoded).all():
            j = int(idx[np.argmax(~np.isfinite(decoded))])
            raise ValueError(
                f"{self.spec()}: x[{j}] = {x[j]:g} times d/k = {x.size / idx.size:g} overflows "
                f"{x.dtype}: rescale the vector"
            )
        return idx, KEY.pack(key) if self.shared else b""

    def indices_from(self, extra, section, d):
        if self.shared:
            return self._indices(KEY.unpack(extra)[0], d)
        return super().indices_from(extra, section, d)

    def expand(self, idx, values, d, dtype, out=None):
        decoded = self.scaled(values, d, dtype)
        if not np.isfinite(decoded).all():
            raise non_finite_decoded(self.spec(), decoded, "value × d/k", idx)
        return super().expand(idx, decoded, d, dtype, out)
