"""Structure-aware fuzzing of the compression operators' decoders.

Every case takes a valid payload (a random vector encoded by one operator of `SPECS`, at one of
`DIMS` and both dtypes), mutates it field by field — the common header, the operator header
fields (Elias non-zero count, rand-k key, a composition's inner bit count), the block scalars,
the index section, the body at random positions and at the start of its coded stream, the
length — or writes a synthetic Elias/Golomb stream of adversarial gaps, levels, counts and runs,
and decodes it (plain, into ``out=``, or fused through `decode_add`). The decoder must return an
array of the right shape and dtype or raise `DecodeError`: any other exception, a crash, a call
over `TIME_LIMIT` seconds or a NumPy allocation over `memory_bound` is a failure.

The cases run in child processes, one per kernel path (``numba``: the compiled kernels;
``numpy``: ``MPICOMP_KERNELS=numpy``; ``python``: ``NUMBA_DISABLE_JIT=1``, the plain-Python
fallback, where an out-of-range index raises IndexError instead of reading stray memory), so a
segfault is caught: the child records the index of the case it is decoding in a small file, and
the parent regenerates that case (each case is a pure function of the seed and its index) and
prints it as a reproducer. Run it from the repository root::

    python tests/fuzz_payloads.py --cases 100000 --seed 1            # all three paths
    python tests/fuzz_payloads.py --cases 2000 --kernels numpy --seed 7

``tests/test_compress_fuzz.py`` runs a short seeded share in CI (``MPICOMP_FUZZ_CASES``).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: every registered operator and coder, blocks, packings and compositions
SPECS = [
    "identity", "fp16", "bf16", "sign", "scaled_sign", "scaled_sign:block=7",
    "dither:p=inf,s=5,block=300", "dither:p=1,s=3,coder=golomb",
    "dither:p=2,s=2,block=64,coder=elias",
    "qsgd:s=4", "qsgd:s=4,block=16", "qsgd:s=7,coder=elias", "qsgd:s=4,block=50,coder=elias",
    "qsgd:s=1,coder=elias", "qsgd:s=4,coder=golomb", "qsgd:s=16,block=33,coder=golomb",
    "terngrad", "terngrad:block=10,clip=2.5", "terngrad:pack=trits", "terngrad:block=6,pack=trits",
    "natural", "natural_dither:s=8", "natural_dither:p=inf,s=3,block=20",
    "topk:k=0.1", "topk:k=3", "randk:k=0.3", "randk:k=0.2,shared=1",
    "uniform:bits=4", "uniform:bits=3,block=10,rounding=stochastic", "uniform:bits=16,block=100",
    "topk:k=0.5+qsgd:s=4,coder=elias", "topk:k=0.1+natural", "randk:k=0.25+qsgd:s=3,coder=golomb",
    "randk:k=0.5,shared=1+qsgd:s=2,block=8,coder=elias", "topk:k=0.3+uniform:bits=5",
    "randk:k=0.4+terngrad", "topk:k=0.5+scaled_sign:block=4", "topk:k=0.2+fp16",
]
DIMS = (1, 7, 100, 1025)
LARGE_DIM = 100_000  # a few cases per run: the time limit is stated for d ≤ 1e5
DTYPES = (np.float32, np.float64)
KERNELS = ("numba", "numpy", "python", "boundscheck")
TIME_LIMIT = 1.0  # seconds a decode may take at d ≤ 1e5
MEMORY_PER_COORD = 96  # bytes a decode may allocate per coordinate (NumPy allocations) …
MEMORY_PER_BYTE = 4  # … plus per byte of the buffer …
MEMORY_SLACK = 1 << 20  # … plus this constant
INTERESTING = (0, 1, 2, 3, 7, 8, 62, 63, 64, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**31,
               2**32 - 1, 2**40, 2**62, 2**63 - 1, 2**64 - 1)
SYNTH_BITS = 1 << 16  # longest synthetic stream (bits); generating it stays cheap
HANG_LIMIT = 120.0  # wall seconds one case may take before the parent kills the child
HEADER_FIELDS = (("magic", 0, 8), ("op", 8, 8), ("dtype", 16, 8), ("flags", 24, 8), ("d", 32, 32))


def memory_bound(d: int, nbytes: int) -> int:
    """Most bytes of NumPy memory a decode of ``d`` coordinates from ``nbytes`` may allocate."""
    return MEMORY_PER_COORD * d + MEMORY_PER_BYTE * nbytes + MEMORY_SLACK


@dataclass
class Case:
    """One decode call: operator, what the caller passes, the bytes, and how they were made."""

    index: int
    spec: str
    d: int
    dtype: str
    buf: bytes
    how: str
    call: str  # "decode", "out" or "add"

    def describe(self) -> str:
        return (f"case {self.index}: spec={self.spec!r} d={self.d} dtype={self.dtype} "
                f"call={self.call}\n"
                f"  mutation: {self.how}\n  bytes ({len(self.buf)}): {self.buf.hex()}")


# --- bit-level editing -----------------------------------------------------------------------
def get_bits(buf: bytearray, pos: int, width: int) -> int:
    """The ``width``-bit little-endian field at stream bit ``pos`` (bits past the end read 0)."""
    v = 0
    for k in range(width):
        p = pos + k
        if p // 8 < len(buf) and (buf[p // 8] >> (p % 8)) & 1:
            v |= 1 << k
    return v


def set_bits(buf: bytearray, pos: int, width: int, value: int) -> None:
    """Write ``value`` (mod 2^width) into the field at stream bit ``pos`` (inside ``buf``)."""
    for k in range(width):
        p = pos + k
        if p // 8 >= len(buf):
            return
        if (value >> k) & 1:
            buf[p // 8] |= 1 << (p % 8)
        else:
            buf[p // 8] &= ~(1 << (p % 8)) & 0xFF


class BitWriter:
    """Codes written MSB first, as `mpicomp.compress.coding` writes them (any value size)."""

    def __init__(self):
        self.bits: list[int] = []

    def gamma(self, n: int) -> None:
        nb = n.bit_length() - 1
        self.bits += [0] * nb + [(n >> k) & 1 for k in range(nb, -1, -1)]

    def zeros(self, n: int) -> None:
        self.bits += [0] * n

    def ones(self, n: int) -> None:
        self.bits += [1] * n

    def uint(self, v: int, width: int) -> None:
        self.bits += [(v >> k) & 1 for k in range(width - 1, -1, -1)]

    def splice(self, buf: bytearray, pos: int) -> bytearray:
        """``buf`` cut at bit ``pos`` with these bits after it, zero padded to whole bytes."""
        out = bytearray(buf[: -(-pos // 8)])
        set_bits(out, pos, 8 * len(out) - pos, 0)
        out += bytes(-(-(pos + len(self.bits)) // 8) - len(out))
        for k, b in enumerate(self.bits):
            if b:
                out[(pos + k) // 8] |= 1 << ((pos + k) % 8)
        return out


# --- where the fields are --------------------------------------------------------------------
def layout(op, d: int, dtype) -> list[tuple[str, int, int]]:
    """Named fields of a payload of ``op``: (name, first bit, bits), from the wire format.

    The body's last field ("stream", "levels", "fields", …) runs to the end of the buffer
    (width −1); variable-size coders' streams start with their counts or first gaps.
    """
    from mpicomp.compress.base import HEADER_BYTES, n_blocks, value_bits
    from mpicomp.compress.compose import Composition
    from mpicomp.compress.sparse import Sparsifier

    fields = list(HEADER_FIELDS)
    bit = 8 * HEADER_BYTES
    inner, k = op, d
    if isinstance(op, Composition):
        if op.outer.shared:
            fields.append(("key", bit, 64))
            bit += 64
        inner, k = op.inner, op.outer.k_of(d)
    if getattr(inner, "coder", "dense") == "elias":
        fields.append(("nnz", bit, 32))
        bit += 32
    if isinstance(op, Composition):
        if op._len_field:
            fields.append(("inner_bits", bit, 32))
            bit += 32
        if not op.outer.shared:
            fields.append(("index", bit, op.outer.index_section_bits(d)))
            bit += op.outer.index_section_bits(d)
    vb = value_bits(dtype)
    if isinstance(inner, Sparsifier):
        if inner.shared:
            return fields + [("key", bit, 64), ("values", bit + 64, -1)]
        return fields + [("values", bit, inner.k_of(d) * vb),
                         ("index", bit + inner.k_of(d) * vb, -1)]
    block = getattr(inner, "block", None)
    if block is not None and inner.name != "uniform":
        fields.append(("scalars", bit, vb * n_blocks(k, block)))
        bit += vb * n_blocks(k, block)
    elif inner.name == "uniform":
        fields.append(("scalars", bit, 2 * vb * n_blocks(k, block)))
        bit += 2 * vb * n_blocks(k, block)
    coder = getattr(inner, "coder", "dense")
    fields.append(("stream" if coder != "dense" else "levels", bit, -1))
    return fields


def field_span(fields, name: str, nbits_total: int) -> tuple[int, int] | None:
    """(first bit, bits) of field ``name`` (the open-ended last field up to ``nbits_total``)."""
    for fname, pos, width in fields:
        if fname == name:
            return pos, (nbits_total - pos if width < 0 else width)
    return None


# --- the base payloads -----------------------------------------------------------------------
def sample_vector(rng: np.random.Generator, d: int, dtype) -> np.ndarray:
    """Random finite test vectors of several shapes: dense, sparse, constant, wide range."""
    kind = rng.integers(5)
    if kind == 0:
        x = rng.standard_normal(d)
    elif kind == 1:
        x = rng.standard_normal(d) * (rng.random(d) < 0.1)
    elif kind == 2:
        x = np.full(d, rng.standard_normal())
    elif kind == 3:
        x = rng.standard_normal(d) * 10.0 ** rng.integers(-20, 20, d)
    else:
        x = np.zeros(d)
        x[rng.integers(d)] = 1.0
    return x.astype(dtype)


def build_pool(seed: int, dims=DIMS, specs=SPECS,
               per_shape: int = 2) -> list[tuple[str, int, str, bytes]]:
    """Valid payloads (spec, d, dtype name, bytes): ``per_shape`` per (spec, d, dtype), a pure
    function of ``seed`` (the encoders write the same bytes on every kernel path)."""
    from mpicomp.compress import make_compressor

    pool = []
    for si, spec in enumerate(specs):
        op = make_compressor(spec)
        for d in dims:
            for dtype in DTYPES:
                for r in range(per_shape):
                    rng = np.random.default_rng([seed, si, d, np.dtype(dtype).itemsize, r])
                    try:
                        p = op.encode(sample_vector(rng, d, dtype), rng)
                    except ValueError:  # k > d, or natural's overflow on a wide-range vector
                        continue
                    pool.append((spec, d, np.dtype(dtype).name, p.buffer.tobytes()))
    return pool


# --- mutations -------------------------------------------------------------------------------
def interesting(rng: np.random.Generator, d: int, width: int, old: int) -> int:
    """A value for a ``width``-bit field: boundary values, d ± 1, neighbours of the old value."""
    choice = rng.integers(6)
    if choice == 0:
        v = int(rng.choice(INTERESTING))
    elif choice == 1:
        v = d + int(rng.integers(-2, 3))
    elif choice == 2:
        v = old + int(rng.integers(-3, 4))
    elif choice == 3:
        v = 1 << int(rng.integers(0, max(1, width)))
    elif choice == 4:
        v = (1 << width) - 1 - int(rng.integers(0, 3))
    else:
        v = int(rng.integers(0, 1 << min(width, 62)))
    return v % (1 << width) if width < 64 or v >= 0 else v % (1 << 64)


def synth_elias(rng, w: BitWriter, d: int, s: int) -> int:
    """Adversarial Elias entries (gap, sign, level): mostly plausible, some past d, some with
    62/63/64 leading zeros or values near 2^63. Returns how many entries were written."""
    n = int(rng.choice([0, 1, 2, 3, int(rng.integers(1, min(2 * d, 2000) + 3))]))
    prev = -1
    for _ in range(n):
        c = rng.integers(10)
        if c < 6:
            gap = int(rng.integers(1, 4))
        elif c == 6:
            gap = max(1, d - 1 - prev + int(rng.integers(-1, 3)))
        elif c == 7:
            gap = (1 << int(rng.integers(1, 64))) - int(rng.integers(0, 2))
        elif c == 8:
            w.zeros(int(rng.choice([62, 63, 64, 100])))
            w.ones(int(rng.integers(1, 70)))
            continue
        else:
            gap = 2**63 - 1
        w.gamma(max(1, gap))
        prev += max(1, gap)
        w.uint(int(rng.integers(2)), 1)
        c = rng.integers(6)
        lev = (int(rng.integers(1, s + 1)) if c < 4
               else (s + 1 if c == 4 else int(rng.choice(INTERESTING[1:]))))
        w.gamma(max(1, lev))
    return n


def synth_golomb(rng, w: BitWriter, d: int, n_symbols: int) -> None:
    """Adversarial source code: γ(count + 1) per symbol (counts that sum past d, overflow, or
    fit), then unary/binary run codes of random and huge lengths."""
    left = d
    for _ in range(1, n_symbols):
        c = rng.integers(8)
        if c < 4:
            count = int(rng.integers(0, max(1, left) + 1)) if rng.random() < 0.5 else 0
        elif c == 4:
            count = left
        elif c == 5:
            count = left + 1
        elif c == 6:
            count = int(rng.choice(INTERESTING))
        else:
            count = 2**62
        left = max(0, left - count)
        w.gamma(count + 1)
    while len(w.bits) < SYNTH_BITS and rng.random() > 1 / (2 * d + 4):
        q = int(rng.choice([0, 0, 1, 2, int(rng.integers(0, d + 3)),
                            int(rng.integers(0, 4 * d + 64))]))
        q = min(q, SYNTH_BITS - len(w.bits))
        w.ones(q)
        w.zeros(1)
        w.uint(int(rng.integers(0, 1 << 20)), int(rng.integers(0, 21)))


def mutate(rng: np.random.Generator, op, d: int, dtype,
           buf: bytes) -> tuple[bytes, int, np.dtype, str]:
    """One mutation of a valid payload: (bytes, d and dtype the caller passes, description)."""
    from mpicomp.compress.base import DTYPE_CODES

    data = bytearray(buf)
    fields = layout(op, d, dtype)
    total = 8 * len(data)
    kind = int(rng.integers(11))
    if kind == 0:  # one field to a boundary value
        name, pos, width = fields[int(rng.integers(len(fields)))]
        pos, width = field_span(fields, name, total)
        width = min(width, 64)
        if width <= 0:
            return bytes(data), d, dtype, f"field {name}: empty"
        old = get_bits(data, pos, width)
        v = interesting(rng, d, width, old)
        set_bits(data, pos, width, v)
        return bytes(data), d, dtype, f"field {name} @bit {pos} ({width} bits): {old} -> {v}"
    if kind == 1:  # header d and the caller's d together: the body read for another d
        d2 = int(rng.choice([0, 1, 2, max(0, d - 1), d + 1, 2 * d,
                             int(rng.integers(0, 3 * d + 9))]))
        if not dim_ok(op, d2):
            return (bytes(data), d, dtype,
                    f"d {d} -> {d2}: not a dimension of {op.spec()}, unchanged")
        set_bits(data, 32, 32, d2)
        return bytes(data), d2, dtype, f"header and caller d {d} -> {d2}"
    if kind == 2:  # header dtype and the caller's dtype together
        other = np.dtype(np.float64 if np.dtype(dtype) == np.float32 else np.float32)
        set_bits(data, 16, 8, DTYPE_CODES[other])
        return bytes(data), d, other, f"header and caller dtype -> {other}"
    if kind in (3, 4):  # a run of bits set to 0 or 1 in a field (gaps, counts, lengths, levels)
        name, pos, width = fields[int(rng.integers(len(fields)))] if kind == 3 else fields[-1]
        pos, width = field_span(fields, name, total)
        if width <= 0:
            return bytes(data), d, dtype, f"run in {name}: empty"
        start = pos + int(rng.integers(0, min(width, 256 if kind == 4 else width)))
        length = int(max(0, min(rng.geometric(0.05), total - start)))
        bit = int(rng.integers(2))
        set_bits(data, start, length, (1 << length) - 1 if bit else 0)
        return bytes(data), d, dtype, f"{length} bits of {name} from bit {start} set to {bit}"
    if kind == 5:  # flip a few random bits anywhere
        hits = rng.integers(0, total, int(rng.integers(1, 4))) if total else []
        for p in hits:
            data[p // 8] ^= 1 << (p % 8)
        return bytes(data), d, dtype, f"flipped bits {list(map(int, hits))}"
    if kind == 6:  # truncate
        cut = int(rng.choice([1, 2, 4, 8, int(rng.integers(0, len(data) + 1))]))
        return bytes(data[: max(0, len(data) - cut)]), d, dtype, f"cut {cut} bytes"
    if kind == 7:  # extend (zeros, ones, random, or a lot)
        n = int(rng.choice([1, 2, 4, 8, 64, 1 << 16]))
        fill = int(rng.integers(3))
        extra = bytes(n) if fill == 0 else b"\xff" * n if fill == 1 else rng.bytes(n)
        return (bytes(data) + extra, d, dtype,
                f"appended {n} bytes ({['zeros', 'ones', 'random'][fill]})")
    if kind == 8:  # random bytes over a stretch
        start = int(rng.integers(0, max(1, len(data))))
        n = int(max(0, min(rng.geometric(0.2), len(data) - start)))
        data[start : start + n] = rng.bytes(n)
        return bytes(data), d, dtype, f"{n} random bytes at byte {start}"
    if kind == 9:  # a synthetic coded stream with consistent header fields
        return synth(rng, op, d, dtype, data, fields)
    # stacked: two or three of the above, each on the result of the one before
    how = []
    out = bytes(data)
    for _ in range(int(rng.integers(2, 4))):
        out, d, dtype, h = mutate(rng, op, d, dtype, out)
        how.append(h)
    return out, d, dtype, " + ".join(how)


def dim_ok(op, d: int) -> bool:
    """Whether ``d`` is a dimension ``op`` takes (a sparsifier's count k must not exceed it)."""
    try:
        op.max_body_bits(d)
    except ValueError:
        return False
    return True


def synth(rng, op, d: int, dtype, data: bytearray, fields) -> tuple[bytes, int, np.dtype, str]:
    """Replace a variable-size coder's stream by adversarial codes; set its header fields (the
    non-zero count, a composition's inner bit count) to match — or nearly."""
    inner = getattr(op, "inner", op)
    coder = getattr(inner, "coder", "dense")
    span = field_span(fields, "stream", 8 * len(data))
    if coder == "dense" or span is None:
        return bytes(data), d, dtype, "synth: fixed-size operator, unchanged"
    k = op.outer.k_of(d) if inner is not op else d
    w = BitWriter()
    if coder == "elias":
        n = synth_elias(rng, w, k, inner.s)
    else:
        synth_golomb(rng, w, k, 2 * inner.s + 1)
        n = None
    out = w.splice(data, span[0])
    if n is not None:
        pos, _ = field_span(fields, "nnz", 0)
        claim = (n + int(rng.choice([0, 0, 0, -1, 1])) if rng.random() < 0.9
                 else int(rng.choice(INTERESTING)))
        set_bits(out, pos, 32, claim)
    inner_span = field_span(fields, "inner_bits", 0)
    if inner_span is not None:
        scalars = field_span(fields, "scalars", 0)
        bits = span[0] + len(w.bits) - scalars[0] + int(rng.choice([0, 0, 0, -1, 1, 8]))
        set_bits(out, inner_span[0], 32, bits)
    return bytes(out), d, dtype, f"synthetic {coder} stream of {len(w.bits)} bits" + (
        f", {n} entries" if n is not None else "")


def make_case(seed: int, index: int, pool, large_pool=()) -> Case:
    """Case ``index`` of the run with ``seed``: a pure function of both (and the pools)."""
    from mpicomp.compress import make_compressor

    rng = np.random.default_rng([seed, index, 0xF022])
    source = large_pool if large_pool and index % 97 == 13 else pool
    spec, d, dtname, buf = source[int(rng.integers(len(source)))]
    op = make_compressor(spec)
    if rng.random() < 0.03:
        new, d2, dt2, how = buf, d, np.dtype(dtname), "valid payload"
    else:
        new, d2, dt2, how = mutate(rng, op, d, np.dtype(dtname), buf)
    call = ("decode", "out", "add")[int(rng.integers(3))]
    return Case(index, spec, int(d2), np.dtype(dt2).name, bytes(new), how, call)


# --- checking --------------------------------------------------------------------------------
#: what `child` reports: decodes that returned an array or raised DecodeError, and the largest
#: traced NumPy peak of a decode as a share of `memory_bound`
STATS = {"returned": 0, "decode_error": 0, "peak_share_of_bound": 0.0}


def check(case: Case, memcheck: bool) -> str | None:
    """None if decoding ``case`` returns a (d,) array of its dtype or raises DecodeError within
    `TIME_LIMIT` (and, with ``memcheck``, `memory_bound`); else what went wrong."""
    from mpicomp.compress import DecodeError, make_compressor

    op = make_compressor(case.spec)
    dtype = np.dtype(case.dtype)
    buf = np.frombuffer(case.buf, np.uint8)
    if memcheck:
        tracemalloc.start()
    t0 = time.process_time()
    problem = None
    try:
        if case.call == "add":
            got = op.decode_add(buf, case.d, dtype, np.zeros(case.d))
            dtype = np.dtype(np.float64)
        else:
            got = op.decode(buf, case.d, dtype,
                            out=np.empty(case.d, dtype) if case.call == "out" else None)
        if not isinstance(got, np.ndarray) or got.shape != (case.d,) or got.dtype != dtype:
            problem = (f"returned {type(got).__name__} "
                       f"{getattr(got, 'dtype', '')}{getattr(got, 'shape', '')}")
        STATS["returned"] += 1
    except DecodeError:
        STATS["decode_error"] += 1
    except Exception:  # noqa: BLE001 - anything but DecodeError is the finding
        problem = "raised " + traceback.format_exc(limit=-4).strip()
    elapsed = time.process_time() - t0  # CPU time: a loaded machine does not fail the case
    if memcheck:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        STATS["peak_share_of_bound"] = max(STATS["peak_share_of_bound"],
                                           peak / memory_bound(case.d, len(case.buf)))
        if problem is None and peak > memory_bound(case.d, len(case.buf)):
            problem = f"allocated {peak} bytes, bound {memory_bound(case.d, len(case.buf))}"
    if problem is None and elapsed > TIME_LIMIT and case.d <= LARGE_DIM:
        problem = f"took {elapsed:.2f} s of CPU time (limit {TIME_LIMIT} s)"
    return problem


def warm_up(pool) -> None:
    """Decode every valid payload once in each call mode, so the timed and traced calls
    neither compile nor load Numba kernels nor fill first-use caches."""
    from mpicomp.compress import make_compressor

    for spec, d, dtname, buf in pool:
        op, dtype = make_compressor(spec), np.dtype(dtname)
        op.decode(np.frombuffer(buf, np.uint8), d, dtype)
        op.decode(np.frombuffer(buf, np.uint8), d, dtype, out=np.empty(d, dtype))
        op.decode_add(np.frombuffer(buf, np.uint8), d, dtype, np.zeros(d))


def child(args) -> int:
    """Run cases ``start … cases−1`` in this process; print a JSON summary on the last line."""
    progress = None
    if args.progress:
        fd = os.open(args.progress, os.O_RDWR)
        progress = mmap.mmap(fd, 8)
    pool = build_pool(args.seed, DIMS)
    large = build_pool(args.seed, (LARGE_DIM,), per_shape=1) if args.kernels != "python" else []
    warm_up(pool + large)
    failures, worst_time = [], 0.0
    t_start = time.perf_counter()
    for i in range(args.start, args.cases):
        if progress is not None:
            progress[:8] = struct.pack("<q", i)
        case = make_case(args.seed, i, pool, large)
        memcheck = args.memcheck_every > 0 and i % args.memcheck_every == 0
        t0 = time.process_time()
        problem = check(case, memcheck)
        worst_time = max(worst_time, time.process_time() - t0)
        if problem:
            failures.append(case.describe() + "\n  " + problem.replace("\n", "\n  "))
            if len(failures) >= args.max_failures:
                break
    summary = {"kernels": args.kernels, "cases": args.cases - args.start, "failures": failures,
               "seconds": round(time.perf_counter() - t_start, 2),
               "worst_call_s": round(worst_time, 4),
               "pool": len(pool) + len(large), **STATS}
    print(json.dumps(summary))
    return 0


def child_env(kernels: str) -> dict:
    """Environment of a child on kernel path ``kernels``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MPICOMP_KERNELS"] = "numpy" if kernels == "numpy" else "numba"
    if kernels == "python":
        env["NUMBA_DISABLE_JIT"] = "1"
    if kernels == "boundscheck":  # compiled with index checks: a stray index raises IndexError
        env["NUMBA_BOUNDSCHECK"] = "1"
        env["NUMBA_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / "mpicomp-fuzz-boundscheck-cache")
    return env


def watch(cmd, env, progress: Path, timeout: float) -> tuple[int, str, str, bool]:
    """Run a child; kill it if one case takes over `HANG_LIMIT` s or all of them ``timeout``.
    Returns (exit code, stdout, stderr, whether it was killed for hanging)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        t_start = last_change = time.monotonic()
        last = None
        hung = False
        while proc.poll() is None:
            time.sleep(0.2)
            now = time.monotonic()
            index = progress.read_bytes()[:8]
            if index != last:
                last, last_change = index, now
            elif ((struct.unpack("<q", index)[0] >= 0 and now - last_change > HANG_LIMIT)
                  or now - t_start > timeout):
                hung = True
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), hung


def fuzz(kernels: str, cases: int, seed: int, memcheck_every: int = 5, max_crashes: int = 10,
         timeout: float = 3600.0) -> dict:
    """Run ``cases`` cases on kernel path ``kernels`` in child processes; a child that dies is
    restarted after the case it died on, which is reported with its bytes.

    Returns the merged summary: ``failures`` holds a description of every failing case.
    """
    failures, seconds, start = [], 0.0, 0
    worst = peak = 0.0
    counts = {"returned": 0, "decode_error": 0}
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "progress"
        while start < cases and len(failures) < max_crashes + 20:
            progress.write_bytes(struct.pack("<q", -1))
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--kernels", kernels,
                   "--cases", str(cases), "--start", str(start), "--seed", str(seed),
                   "--memcheck-every", str(memcheck_every), "--progress", str(progress)]
            returncode, stdout, stderr, hung = watch(cmd, child_env(kernels), progress, timeout)
            lines = stdout.strip().splitlines()
            if returncode == 0 and lines:
                summary = json.loads(lines[-1])
                failures += summary["failures"]
                seconds += summary["seconds"]
                worst = max(worst, summary["worst_call_s"])
                peak = max(peak, summary["peak_share_of_bound"])
                for key in ("returned", "decode_error"):
                    counts[key] += summary[key]
                break
            (index,) = struct.unpack("<q", progress.read_bytes()[:8])
            tail = stderr.strip()[-1500:]
            if index < 0:
                raise RuntimeError(f"fuzz child ({kernels}) failed before its first case:\n{tail}")
            pool = build_pool(seed, DIMS)
            large = build_pool(seed, (LARGE_DIM,), per_shape=1) if kernels != "python" else []
            case = make_case(seed, index, pool, large)
            what = (f"hung: no progress for {HANG_LIMIT:.0f} s" if hung
                    else f"child process died with exit code {returncode}")
            failures.append(f"{case.describe()}\n  {what}\n  " + tail.replace("\n", "\n  "))
            start = index + 1
    return {"kernels": kernels, "cases": cases, "seed": seed, "failures": failures,
            "seconds": round(seconds, 2), "worst_call_s": worst, "peak_share_of_bound": peak,
            **counts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int,
                        default=int(os.environ.get("MPICOMP_FUZZ_CASES", 100_000)))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kernels", choices=KERNELS + ("all",), default="all")
    parser.add_argument("--python-share", type=float, default=0.05,
                        help="with --kernels all: the plain-Python path runs this share of --cases")
    parser.add_argument("--memcheck-every", type=int, default=5,
                        help="tracemalloc every N-th case (0: never)")
    parser.add_argument("--max-failures", type=int, default=50)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--progress", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    status = 0
    for kernels in KERNELS if args.kernels == "all" else (args.kernels,):
        n = (args.cases if kernels != "python" or args.kernels != "all"
             else max(1, int(args.cases * args.python_share)))
        t0 = time.perf_counter()
        result = fuzz(kernels, n, args.seed, args.memcheck_every)
        print(f"[{kernels}] {n} cases, seed {args.seed}: {len(result['failures'])} failures, "
              f"{time.perf_counter() - t0:.1f} s wall ({result['seconds']} s decoding), "
              f"slowest case {result['worst_call_s']:.3f} s CPU, largest traced NumPy peak "
              f"{result['peak_share_of_bound']:.2f} of the bound; {result['returned']} decoded, "
              f"{result['decode_error']} DecodeError (in runs that finished)", flush=True)
        for failure in result["failures"]:
            print(failure, flush=True)
        status |= bool(result["failures"])
    return status


if __name__ == "__main__":
    sys.exit(main())
