"""Per-layer compression: one operator applied separately to consecutive segments of the vector.

Frameworks such as GRACE and DeepSpeed compress each parameter tensor of a network on its own
(its own norm, its own top-k, its own scale). `PerLayer` does this for any operator of the
registry: with segments x_1, …, x_L of lengths ``sizes`` (the tensors, flattened in order),

    C(x) = concat_i base(x_i),

the segments encoded one after the other with the same generator, so the values are those of
``concat([base.decode(base.encode(x_i, rng)) for x_i in segments])``.

Wire format (`PerLayer.code` 15)::

    header (8 bytes, d = sum(sizes)) | per segment: base's extra header fields [+ uint32 bits]
    body: segment 1's body bits ‖ segment 2's body bits ‖ … (no padding in between)

Each segment contributes what the base operator's own message of it holds after the common
8-byte header: its extra header fields (rand-k's shared key, the Elias non-zero count) go to
the extra header, as in a composition ``A+B``, and its body bits to the flat bit stream. When
the base operator has a data-dependent size, the segment's body bit count follows its fields
as a uint32 so the segment boundaries are exact. ``nbits`` is the sum of the segments' body
bits (header fields are not information bits, as for every operator), so
``len(buffer) == 8 + extra_header + ceil(nbits / 8)``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from .base import (
    MAX_DIM,
    Compressor,
    DecodeError,
    NonFiniteVector,
    check_dtype,
    output_array,
    raise_non_finite,
)
from .bitpack import check_padding

SEGMENT_BITS = struct.Struct("<I")


def pack_stream(parts: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
    """The bit streams ``part[:bits]`` of ``parts``, one after the other without padding, as
    bytes (``bitorder="little"``; the padding bits of the last byte are zero). One pass over the
    bytes, where chaining `bitpack.append_bits` would copy the head once per part."""
    total = sum(bits for _, bits in parts)
    out = np.zeros(-(-total // 8), dtype=np.uint8)
    offset = 0
    for data, bits in parts:
        if bits == 0:
            continue
        nb = -(-bits // 8)
        seg = np.ascontiguousarray(data, dtype=np.uint8)[:nb]
        if seg.size < nb:
            raise AssertionError(f"a part of {seg.size} bytes cannot hold {bits} bits")
        if bits % 8:  # drop whatever lies past the part's last bit
            seg = seg.copy()
            seg[-1] &= (1 << (bits % 8)) - 1
        base, shift = divmod(offset, 8)
        if shift == 0:
            out[base : base + nb] |= seg
        else:
            wide = seg.astype(np.uint16) << shift
            out[base : base + nb] |= (wide & 0xFF).astype(np.uint8)
            high = (wide >> 8).astype(np.uint8)
            room = out.size - (base + 1)  # high bits past the stream's end are zero
            out[base + 1 : base + 1 + min(room, nb)] |= high[:room]
        offset += bits
    return out


def stream_part(buf: np.ndarray, offset: int, bits: int) -> np.ndarray:
    """Stream bits ``[offset, offset + bits)`` of ``buf`` as a fresh ``ceil(bits / 8)``-byte
    array starting at bit 0, its padding bits zero (they belong to the next part); ``buf`` must
    hold them."""
    nb = -(-bits // 8)
    base, shift = divmod(offset, 8)
    if shift == 0:
        seg = buf[base : base + nb].copy()
    else:
        chunk = buf[base : base + nb + 1]
        nxt = np.zeros(nb, dtype=np.uint8)
        nxt[: chunk.size - 1] = chunk[1 : nb + 1]
        seg = ((chunk[:nb] >> shift) | (nxt << (8 - shift))).astype(np.uint8)
    if bits % 8:
        seg[-1] &= (1 << (bits % 8)) - 1
    return seg


class PerLayer(Compressor):
    """``base`` applied separately to each of the consecutive segments of lengths ``sizes``.

    Parameters
    ----------
    base : Compressor
        Any operator of the registry, a composition ``A+B`` included (not a `PerLayer`).
    sizes : sequence of int
        Positive segment lengths (the flattened parameter tensors, in order); they sum to the
        dimension d of the vectors this operator encodes, and only to that one.
    names : sequence of str, optional
        One name per segment (``"fc1.weight"``), used in error messages.

    Attributes
    ----------
    sizes, names : tuple
        The segment lengths, and names (None when not given).
    bounds : numpy.ndarray
        ``L + 1`` int64 offsets: segment i is ``x[bounds[i]:bounds[i + 1]]``.
    d : int
        ``sum(sizes)``.
    last_bits : numpy.ndarray or None
        Information bits of each segment (int64, summing to ``nbits``) of this instance's last
        successful `encode`, for per-layer accounting; None before the first. This is the one
        piece of state an operator holds: share an instance between threads that encode at
        once and it describes one of their messages.

    Notes
    -----
    Unbiased, randomised and fixed-size exactly when ``base`` is. Since
    ``‖C(x) − x‖² = Σ_i ‖base(x_i) − x_i‖²``, the bounds of the segments combine to ω = max_i
    ω_base(size_i) (for the operators whose ω grows with the length: ω_base(max size)) and
    δ = min_i δ_base(size_i). A sparsifier with a count ``k`` must keep at most the length of
    every segment (a fraction keeps ``max(1, round(k·size))`` of each). `spec` is descriptive,
    ``"qsgd:s=4|layers=12"``: `make_compressor` does not parse it (the sizes are not in it);
    build the operator with `per_layer`.
    """

    name = "per_layer"
    code = 15

    def __init__(self, base: Compressor, sizes: Sequence[int],
                 names: Sequence[str] | None = None):
        if not isinstance(base, Compressor):
            raise TypeError(f"per_layer: base must be a Compressor, got {type(base).__name__}")
        if isinstance(base, PerLayer):
            raise ValueError(
                f"per_layer: the base operator {base.spec()!r} is itself per-layer; give the "
                "segments of the whole vector to one PerLayer instead of nesting them"
            )
        self.base = base
        sizes = list(sizes)
        if not sizes:
            raise ValueError("per_layer: sizes is empty; give at least one segment length")
        for i, n in enumerate(sizes):
            if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n <= 0:
                raise ValueError(
                    f"per_layer: sizes[{i}] = {n!r} must be a positive integer (segment length)"
                )
        self.sizes = tuple(int(n) for n in sizes)
        if names is not None:
            names = tuple(str(s) for s in names)
            if len(names) != len(self.sizes):
                raise ValueError(
                    f"per_layer: {len(names)} names for {len(self.sizes)} segment sizes"
                )
        self.names = names
        self.bounds = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.d = int(self.bounds[-1])
        if self.d > MAX_DIM:
            raise ValueError(
                f"per_layer: the segments sum to {self.d}, beyond the wire format's limit {MAX_DIM}"
            )
        need = base.min_length()
        for i, n in enumerate(self.sizes):
            if n < need:
                raise ValueError(
                    f"per_layer: {base.spec()} keeps more coordinates than the {n} of "
                    f"{self._segment(i)}; use k ≤ {min(self.sizes)} or a fraction k < 1"
                )
        self._len_field = 0 if base.fixed_size else SEGMENT_BITS.size
        self._record = base.extra_header + self._len_field
        #: the base's NaN/Inf detection runs per segment; `encode_body` reports the global index
        self.kernel_checks_finite = base.kernel_checks_finite
        self.last_bits: np.ndarray | None = None
        #: information bits of every message this instance encoded, per segment (a run's
        #: per-layer bits; checkpointed with the run)
        self.total_bits = np.zeros(len(self.sizes), np.int64)
        self._pending_bits: np.ndarray | None = None

    # -- properties ----------------------------------------------------------------------------
    @property
    def unbiased(self) -> bool:
        return self.base.unbiased

    @property
    def randomised(self) -> bool:
        return self.base.randomised

    @property
    def fixed_size(self) -> bool:
        return self.base.fixed_size

    @property
    def extra_header(self) -> int:
        return len(self.sizes) * self._record

    def spec(self) -> str:
        """Descriptive: ``"<base spec>|layers=L"`` (not a registry string; see `per_layer`)."""
        return f"{self.base.spec()}|layers={len(self.sizes)}"

    def min_length(self) -> int:
        """``d``: the operator compresses vectors of exactly ``sum(sizes)`` values."""
        return self.d

    def _segment(self, i: int) -> str:
        """``segment 3 ('fc1.weight', 100 values at offset 200)`` for messages."""
        name = f"{self.names[i]!r}, " if self.names is not None else ""
        return f"segment {i} ({name}{self.sizes[i]} values at offset {int(self.bounds[i])})"

    def _check_dim(self, d: int) -> None:
        if int(d) != self.d:
            raise ValueError(
                f"{self.spec()}: dimension {int(d)} is not the sum {self.d} of the segment sizes"
            )

    def body_bits(self, d: int, dtype=np.float32) -> int:
        self._check_dim(d)
        return sum(self.base.body_bits(n, dtype) for n in self.sizes)

    def max_body_bits(self, d: int, dtype=np.float32) -> int:
        """Sum of the segments' maxima; 0 for ``d = 0`` (no vector of that length can be
        encoded, so `nbytes_max(0)` is the header's size, as for the other operators)."""
        if int(d) == 0:
            return 0
        self._check_dim(d)
        return sum(self.base.max_body_bits(n, dtype) for n in self.sizes)

    def omega(self, d: int):
        self._check_dim(d)
        if not self.unbiased:
            return None
        return max(self.base.omega(n) for n in set(self.sizes))

    def delta(self, d: int):
        self._check_dim(d)
        deltas = [self.base.delta(n) for n in set(self.sizes)]
        return None if any(v is None for v in deltas) else min(deltas)

    def accumulates(self, dtype) -> bool:
        return self.base.accumulates(dtype)

    # -- encode --------------------------------------------------------------------------------
    def encode(self, x, rng: np.random.Generator | None = None):
        """`Compressor.encode`, after checking that ``x`` has ``sum(sizes)`` values; sets
        `last_bits`."""
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) == 1 and int(shape[0]) != self.d:
            raise ValueError(
                f"{self.spec()}: vector of length {int(shape[0])}, the segment sizes sum to "
                f"{self.d}"
            )
        payload = super().encode(x, rng)
        self.last_bits = self._pending_bits
        self.total_bits += self.last_bits
        return payload

    def encode_body(self, x, rng):
        if x.size != self.d:
            raise ValueError(
                f"{self.spec()}: vector of length {x.size}, the segment sizes sum to {self.d}"
            )
        extras, parts = [], []
        bits = np.zeros(len(self.sizes), dtype=np.int64)
        for i in range(len(self.sizes)):
            seg = x[self.bounds[i] : self.bounds[i + 1]]
            try:
                extra, body, nbits = self.base.encode_body(seg, rng)
            except NonFiniteVector:
                raise_non_finite(x)  # the index in the whole vector
                raise
            except ValueError as exc:
                raise ValueError(f"{self.spec()}: {self._segment(i)}: {exc}") from exc
            if len(extra) != self.base.extra_header:
                raise AssertionError(f"{self.base.spec()} wrote {len(extra)} header bytes, "
                                     f"declares {self.base.extra_header}")
            if isinstance(body, (list, tuple)):
                body = np.concatenate(body) if body else np.zeros(0, np.uint8)
            extras.append(extra + (SEGMENT_BITS.pack(nbits) if self._len_field else b""))
            parts.append((body, int(nbits)))
            bits[i] = nbits
        self._pending_bits = bits
        return b"".join(extras), pack_stream(parts), int(bits.sum())

    # -- decode --------------------------------------------------------------------------------
    def _layout(self, extra: bytes, body: np.ndarray, d: int, dtype) -> list[tuple[bytes, int]]:
        """Each segment's (base header fields, body bit count), the body checked to hold exactly
        their sum with zero padding; raises DecodeError."""
        if d != self.d:
            raise DecodeError(
                f"{self.spec()}: dimension {d} is not the sum {self.d} of the segment sizes"
            )
        nb = self.base.extra_header
        layout = []
        for i, n in enumerate(self.sizes):
            record = extra[i * self._record : (i + 1) * self._record]
            if self._len_field:
                (bits,) = SEGMENT_BITS.unpack(record[nb:])
                most = self.base.max_body_bits(n, dtype)
                if bits > most:
                    raise DecodeError(
                        f"{self.spec()}: {self._segment(i)} claims {bits} body bits, at most "
                        f"{most} for {n} values: corrupted buffer"
                    )
            else:
                bits = self.base.body_bits(n, dtype)
            layout.append((record[:nb], bits))
        total = sum(bits for _, bits in layout)
        self._check_body_size(body, total)
        try:
            check_padding(body, total)
        except DecodeError as exc:
            raise self._named(exc) from exc
        return layout

    def _segments(self, extra, body, d, dtype):
        """(i, base header fields, the segment's body re-aligned) per segment."""
        offset = 0
        for i, (fields, bits) in enumerate(self._layout(extra, body, d, dtype)):
            yield i, fields, stream_part(body, offset, bits)
            offset += bits

    def decode_body(self, extra, body, d, dtype, out=None):
        out = output_array(out, d, dtype)
        for i, fields, seg in self._segments(extra, body, d, dtype):
            view = out[self.bounds[i] : self.bounds[i + 1]]
            try:
                values = self.base.decode_body(fields, seg, self.sizes[i], dtype, view)
            except DecodeError as exc:
                raise DecodeError(f"{self.spec()}: {self._segment(i)}: {exc}") from exc
            if values is not view:
                view[...] = values
        return out

    def add_body(self, extra, body, d, dtype, acc):
        for i, fields, seg in self._segments(extra, body, d, dtype):
            try:
                self.base.add_body(fields, seg, self.sizes[i], dtype,
                                   acc[self.bounds[i] : self.bounds[i + 1]])
            except DecodeError as exc:
                raise DecodeError(f"{self.spec()}: {self._segment(i)}: {exc}") from exc

    def segment_bits(self, buf, dtype=np.float32) -> np.ndarray:
        """Information bits of each segment of a received buffer (int64; the receiver's
        `last_bits`), from its header fields; raises DecodeError."""
        extra, body = self.split(buf, self.d, dtype)
        dtype = check_dtype(dtype)
        return np.array([bits for _, bits in self._layout(extra, body, self.d, dtype)],
                        dtype=np.int64)


def per_layer(base_or_spec: str | Compressor, sizes: Sequence[int],
              names: Sequence[str] | None = None) -> PerLayer:
    """`PerLayer` of an operator or of a registry spec string.

    >>> op = per_layer("qsgd:s=4", [300, 100, 20])
    >>> op.spec()
    'qsgd:s=4|layers=3'
    """
    from .registry import make_compressor

    return PerLayer(make_compressor(base_or_spec), sizes, names)
