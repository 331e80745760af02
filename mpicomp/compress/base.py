"""The compressor contract: `Payload`, `Compressor`, the wire header and `DecodeError`.

Every operator turns a flat float vector into one contiguous ``uint8`` buffer::

    header (8 bytes, little endian)        body (bit-packed, ``bitorder="little"``)
    magic 0xC5 | op code | dtype code | flags | d (uint32)  | extra header fields | bits

``nbits`` counts the information bits of the body (norms, signs, levels, indices, values);
``len(buffer) == header_bytes + ceil(nbits / 8)`` for every operator.

Fixed-size operators write their body straight into the message (`Compressor.write_body`):
`encode` allocates one buffer of ``nbytes_max`` bytes, fills in the header and lets the operator
write the rest, so no body is built apart and concatenated.

`Compressor.split` is the one place a header is parsed: the magic, operator code, dtype code
(one of `DTYPES_BY_CODE`), flags (only bits the operator defines, none today) and d must all
match, else `DecodeError`. Decoders then bound every length and index they read against d
before using it, and a decoded vector is always finite.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from . import kernels

MAGIC = 0xC5
HEADER = struct.Struct("<BBBBI")
HEADER_BYTES = HEADER.size
DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2}
DTYPES_BY_CODE = {code: dtype for dtype, code in DTYPE_CODES.items()}
VALID_DTYPE_CODES = ", ".join(f"{code} ({dtype})" for code, dtype in DTYPES_BY_CODE.items())
MAX_DIM = 2**32 - 1


class DecodeError(ValueError):
    """A buffer that is truncated, malformed or does not match what the caller expects."""


@dataclass(frozen=True)
class Payload:
    """An encoded message.

    Attributes
    ----------
    buffer : numpy.ndarray
        Contiguous ``uint8`` array: header plus bit-packed body.
    nbits : int
        Information bits of the body (excludes the header and the final byte's padding).
    """

    buffer: np.ndarray
    nbits: int

    @property
    def nbytes(self) -> int:
        """Bytes that go on the wire."""
        return int(self.buffer.nbytes)


def numpy_dtype(dtype) -> np.dtype:
    """``dtype`` as a NumPy dtype (``array_api_strict``'s dtypes wrap NumPy's)."""
    return np.dtype(getattr(dtype, "_np_dtype", dtype))


def check_dtype(dtype) -> np.dtype:
    """Return ``dtype`` as a NumPy dtype if it is float32 or float64, else raise TypeError."""
    dt = numpy_dtype(dtype)
    if dt not in DTYPE_CODES:
        raise TypeError(f"unsupported dtype {dt}: compressors take float32 or float64 vectors")
    return dt


class NonFiniteVector(ValueError):
    """An input vector holds NaN or Inf (compressors take finite values only)."""


def raise_non_finite(x: np.ndarray) -> None:
    """Raise the NonFiniteVector that names the first NaN/Inf entry of ``x`` (if there is
    one)."""
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise NonFiniteVector(
            f"vector has {bad.size} non-finite entries (first at index {bad[0]}: {x[bad[0]]}); "
            "compressors take finite values only"
        )


def non_finite_decoded(spec: str, values: np.ndarray, what: str = "value",
                       positions=None) -> DecodeError:
    """The DecodeError for a decoded ``values`` array holding NaN/Inf (a corrupted buffer).

    Names the first bad entry: its index, or ``positions[index]`` (the coordinate it lands on)
    when ``positions`` is given.
    """
    first = int(np.flatnonzero(~np.isfinite(values))[0])
    where = first if positions is None else int(positions[first])
    return DecodeError(
        f"{spec}: decoded {what} at coordinate {where} is {values[first]}: corrupted buffer "
        "(decoded vectors are always finite)"
    )


def check_vector(x, finite: bool = True) -> np.ndarray:
    """Validate an input vector: 1-D, float32/float64 and (unless ``finite=False``) finite.

    Returns it C-contiguous. Operators whose kernels detect NaN/Inf on their own pass
    ``finite=False`` and call `raise_non_finite` when their kernel reports one.
    """
    if getattr(x, "ndim", None) != 1:
        raise ValueError(f"expected a flat 1-D vector, got shape {getattr(x, 'shape', None)}")
    check_dtype(x.dtype)
    if x.size > MAX_DIM:
        raise ValueError(f"dimension {x.size} exceeds the wire format's limit {MAX_DIM}")
    x = np.ascontiguousarray(x)
    if finite and x.size and not kernels.backend().all_finite(x):
        raise_non_finite(x)
    return x


def output_array(out: np.ndarray | None, d: int, dtype) -> np.ndarray:
    """``out`` if the caller gave one, else a new array of ``d`` values of ``dtype``."""
    return np.empty(d, dtype=dtype) if out is None else out


def check_body_size(body: np.ndarray, nbits: int) -> None:
    """Raise DecodeError unless ``body`` is exactly the ``ceil(nbits / 8)`` bytes of ``nbits``."""
    want = -(-nbits // 8)
    if body.size != want:
        kind = "truncated" if body.size < want else "too long"
        raise DecodeError(f"body is {kind}: {body.size} bytes, expected {want} ({nbits} bits)")


class Compressor:
    """Base class of all compression operators (stateless).

    Subclasses set ``name`` and ``code``, override the properties below that differ from the
    defaults (with a class attribute, or a property where the value depends on the instance's
    parameters) and implement `encode_body`, `decode_body` and `body_bits`.
    """

    name: ClassVar[str] = ""
    code: ClassVar[int] = 0
    #: `encode_body` detects NaN/Inf itself (on either kernel path): encode skips the scan
    kernel_checks_finite: ClassVar[bool] = False
    #: header flag bits this operator defines (none do yet); `split` rejects any other bit
    header_flags: ClassVar[int] = 0
    #: `write_body` writes the body in place (fixed-size operators); else `encode_body`
    writes_in_place: ClassVar[bool] = False

    @property
    def unbiased(self) -> bool:
        """Whether E[C(x)] = x for every x."""
        return False

    @property
    def randomised(self) -> bool:
        """Whether encode draws random numbers (then its ``rng`` is required)."""
        return False

    @property
    def fixed_size(self) -> bool:
        """Whether every message of dimension d has ``body_bits(d)`` bits (`nbytes_max`)."""
        return True

    @property
    def extra_header(self) -> int:
        """Bytes of operator-specific header fields after the common 8-byte header."""
        return 0

    # -- contract ------------------------------------------------------------------------------
    def encode(self, x, rng: np.random.Generator | None = None) -> Payload:
        """Compress ``x`` into a `Payload`.

        Parameters
        ----------
        x : array_like
            Flat float32 or float64 vector (NumPy or CuPy); NaN and Inf are rejected.
        rng : numpy.random.Generator, optional
            Source of the random draws of stochastic operators (one 64-bit key per call).
        """
        from ..backend import to_host

        x = check_vector(to_host(x), finite=not self.kernel_checks_finite)
        if self.randomised and rng is None:
            raise ValueError(f"{self.spec()} is randomised: pass rng=np.random.Generator")
        header = np.frombuffer(HEADER.pack(MAGIC, self.code, DTYPE_CODES[x.dtype], 0, x.size),
                               np.uint8)
        if self.writes_in_place:
            buf = np.empty(self.nbytes_max(x.size, x.dtype), dtype=np.uint8)
            start = HEADER_BYTES + self.extra_header
            extra = self.write_body(x, rng, buf[start:])
            buf[:HEADER_BYTES] = header
            buf[HEADER_BYTES:start] = np.frombuffer(extra, np.uint8)
            return Payload(buf, self.body_bits(x.size, x.dtype))
        extra, body, nbits = self.encode_body(x, rng)
        parts = [header, np.frombuffer(extra, np.uint8)]
        parts += list(body) if isinstance(body, (list, tuple)) else [body]
        return Payload(np.concatenate(parts), int(nbits))

    def decode(self, buf, d: int, dtype=np.float32, out: np.ndarray | None = None) -> np.ndarray:
        """Reconstruct the compressed vector of length ``d`` from ``buf``; raise DecodeError.

        Parameters
        ----------
        out : numpy.ndarray, optional
            A C-contiguous vector of ``d`` values of ``dtype`` to write into (reused buffers
            avoid page-faulting a fresh array on every call); returned.
        """
        extra, body = self.split(buf, d, dtype)
        dtype = check_dtype(dtype)
        d = int(d)
        if out is not None and (out.shape != (d,) or out.dtype != dtype
                                or not out.flags.c_contiguous):
            raise ValueError(f"out must be a C-contiguous {dtype} vector of length {d}, "
                             f"got {out.dtype}{out.shape}")
        result = self.decode_body(extra, body, d, dtype, out)
        if out is not None and result is not out:
            out[...] = result
            return out
        return result

    def decode_add(self, buf, d: int, dtype, acc: np.ndarray,
                   scratch: np.ndarray | None = None) -> np.ndarray:
        """``acc += decode(buf, d, dtype)`` with ``acc`` a float64 vector: the same values as
        decoding and then adding, fused into one pass where the operator's kernel allows it
        (`accumulates`); ``scratch`` is a reusable decode buffer for the others."""
        if acc.dtype != np.float64 or acc.shape != (int(d),):
            raise ValueError(f"acc must be a float64 vector of length {d}, "
                             f"got {acc.dtype}{acc.shape}")
        if self.accumulates(dtype):
            extra, body = self.split(buf, d, dtype)
            self.add_body(extra, body, int(d), check_dtype(dtype), acc)
        else:
            acc += self.decode(buf, d, dtype, out=scratch)
        return acc

    def accumulates(self, dtype) -> bool:
        """Whether `decode_add` runs fused for payloads of ``dtype`` (see `add_body`)."""
        return False

    def split(self, buf, d: int, dtype=np.float32) -> tuple[bytes, np.ndarray]:
        """Check the header against this operator, ``d`` and ``dtype``; return (operator header
        fields, body). Raises DecodeError."""
        buf = self._as_bytes(buf)
        dtype = check_dtype(dtype)
        d = int(d)
        if buf.size < HEADER_BYTES + self.extra_header:
            raise DecodeError(
                f"{self.spec()}: buffer of {buf.size} bytes is shorter than its "
                f"{HEADER_BYTES + self.extra_header}-byte header"
            )
        magic, code, dcode, flags, dim = HEADER.unpack_from(buf[:HEADER_BYTES].tobytes())
        if magic != MAGIC:
            raise DecodeError(
                f"{self.spec()}: bad magic byte 0x{magic:02x} (expected 0x{MAGIC:02x})"
            )
        if code != self.code:
            raise DecodeError(
                f"{self.spec()}: buffer was written by operator code {code}, not {self.code}"
            )
        if dcode not in DTYPES_BY_CODE:
            raise DecodeError(
                f"{self.spec()}: unknown dtype code {dcode} in the header; "
                f"valid codes: {VALID_DTYPE_CODES}"
            )
        if DTYPES_BY_CODE[dcode] != dtype:
            raise DecodeError(
                f"{self.spec()}: buffer holds {DTYPES_BY_CODE[dcode]}, caller asked for {dtype}"
            )
        if flags & ~self.header_flags:
            raise DecodeError(
                f"{self.spec()}: reserved header flag bits "
                f"0x{flags & ~self.header_flags:02x} are set "
                f"(flags byte 0x{flags:02x}; this operator defines 0x{self.header_flags:02x})"
            )
        if dim != d:
            raise DecodeError(
                f"{self.spec()}: buffer holds a vector of dimension {dim}, expected {d}"
            )
        extra = buf[HEADER_BYTES : HEADER_BYTES + self.extra_header].tobytes()
        return extra, buf[HEADER_BYTES + self.extra_header :]

    def nbytes_max(self, d: int, dtype=np.float32) -> int:
        """Upper bound of ``len(buffer)`` for any vector of dimension ``d``."""
        d = int(d)
        return HEADER_BYTES + self.extra_header + -(-self.max_body_bits(d, dtype) // 8)

    def max_body_bits(self, d: int, dtype=np.float32) -> int:
        """Largest ``nbits`` of any message of dimension ``d`` (equals it when fixed_size)."""
        return self.body_bits(d, dtype)

    def omega(self, d: int) -> float | None:
        """Variance parameter ω with E‖C(x) − x‖² ≤ ω‖x‖² (unbiased operators), else None."""
        return None

    def delta(self, d: int) -> float | None:
        """Contraction δ with E‖C(x) − x‖² ≤ (1 − δ)‖x‖² (biased operators), else None."""
        return None

    def __call__(self, x, rng: np.random.Generator | None = None) -> np.ndarray:
        """The operator's value C(x): ``decode(encode(x))``."""
        x = check_vector(np.asarray(x), finite=False)
        return self.decode(self.encode(x, rng).buffer, x.size, x.dtype)

    # -- to implement ------------------------------------------------------------------------
    def spec(self) -> str:
        """The registry string that builds this operator, e.g. ``qsgd:s=4,block=512``."""
        return self.name

    def min_length(self) -> int:
        """The shortest vector this operator can compress (`registry.check_lengths`): 0 for
        every operator but a sparsifier with a count ``k`` ≥ 1, which keeps ``k`` coordinates."""
        return 0

    def body_bits(self, d: int, dtype=np.float32) -> int:  # pragma: no cover - abstract
        """Exact ``nbits`` for dimension ``d`` (fixed-size operators)."""
        raise NotImplementedError

    def write_body(self, x: np.ndarray, rng, out: np.ndarray) -> bytes:
        """Write the body of ``x``'s message into ``out`` (exactly ``ceil(body_bits / 8)``
        bytes, every one written, padding bits zero); return the operator's header fields.
        Operators that set `writes_in_place` implement it (their `encode_body` calls it)."""
        raise NotImplementedError  # pragma: no cover

    def encode_body(self, x: np.ndarray, rng) -> tuple[bytes, np.ndarray | list, int]:
        """The operator's part of the message of ``x``, which `encode` frames with the header.

        Operators that write in place get it from `write_body`; the others implement it.

        Parameters
        ----------
        x : numpy.ndarray
            A vector `encode` has checked: C-contiguous float32/float64 on the host.
        rng : numpy.random.Generator or None
            Source of the random draws (not None when `randomised`).

        Returns
        -------
        extra : bytes
            The operator's header fields (`extra_header` bytes).
        body : numpy.ndarray or list of numpy.ndarray
            The bit-packed body as ``uint8`` arrays, concatenated in order.
        nbits : int
            Information bits of the body.
        """
        if not self.writes_in_place:
            raise NotImplementedError  # pragma: no cover
        body = np.empty(-(-self.body_bits(x.size, x.dtype) // 8), dtype=np.uint8)
        return self.write_body(x, rng, body), body, self.body_bits(x.size, x.dtype)

    def decode_body(self, extra: bytes, body: np.ndarray, d: int, dtype,
                    out: np.ndarray | None = None) -> np.ndarray:
        """The ``d`` values of ``dtype`` (a checked NumPy dtype) from the header fields and body
        that `split` returned, into ``out`` if given; raises DecodeError."""
        raise NotImplementedError  # pragma: no cover

    def add_body(self, extra: bytes, body: np.ndarray, d: int, dtype, acc: np.ndarray) -> None:
        """``acc += decode_body(...)`` in one pass, for the dtypes where `accumulates` is True."""
        raise NotImplementedError  # pragma: no cover

    # -- helpers ------------------------------------------------------------------------------
    def _named(self, exc: DecodeError) -> DecodeError:
        """``exc`` with this operator's spec in front (for errors of the pieces it delegates to)."""
        return DecodeError(f"{self.spec()}: {exc}")

    def _as_bytes(self, buf) -> np.ndarray:
        from ..backend import to_host

        if isinstance(buf, Payload):
            buf = buf.buffer
        buf = to_host(buf)
        if isinstance(buf, (bytes, bytearray, memoryview)):
            buf = np.frombuffer(buf, np.uint8)
        buf = np.asarray(buf)
        if buf.dtype != np.uint8 or buf.ndim != 1:
            raise DecodeError(
                f"{self.spec()}: expected a flat uint8 buffer, got {buf.dtype}{buf.shape}"
            )
        return buf

    def _check_body_size(self, body: np.ndarray, nbits: int) -> None:
        try:
            check_body_size(body, nbits)
        except DecodeError as exc:
            raise self._named(exc) from exc

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec()}>"


def n_blocks(d: int, block: int) -> int:
    """Number of blocks of size ``block`` (0 = one block of the whole vector) covering ``d``."""
    if d == 0:
        return 0
    return 1 if block <= 0 else -(-d // block)


def value_bits(dtype) -> int:
    """Bits of one transmitted scalar (norms, kept values): the input's own precision."""
    return 8 * numpy_dtype(dtype).itemsize
