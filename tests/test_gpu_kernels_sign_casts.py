"""GPU kernels of sign, scaled sign, the casts, natural compression and rand-k (Numba CUDA).

Under the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set by the suite's conftest): the
device body is byte for byte the CPU payload's body for the same input, key and block scales;
the device decode of a CPU payload is bit for bit the CPU decode (and ``decode_add``); the
status slots name the coordinate the CPU rejects. A subprocess without the simulator compiles
every kernel to PTX for sm_90 with the argument types it is launched with.

The simulator runs every GPU thread as a Python thread (about half a millisecond each), so the
vectors are short and the launches use 32-thread blocks (the kernels index by ``cuda.grid(1)``
only, so the block size does not change what they compute).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("numba.cuda")

import mpicomp.compress.cuda as device  # noqa: E402
from mpicomp.compress import make_compressor, numpy_kernels  # noqa: E402
from mpicomp.compress.base import (  # noqa: E402
    DTYPE_CODES,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    DecodeError,
)
from mpicomp.compress.bitpack import pack_fields, unpack_fields  # noqa: E402
from mpicomp.compress.blockwise import norms  # noqa: E402
from mpicomp.compress.cast import BF16_MAX, FP16_MAX  # noqa: E402
from mpicomp.compress.counter_rng import draw_key  # noqa: E402
from mpicomp.compress.cuda import (  # noqa: E402
    NON_FINITE,
    NONE,
    REJECTED,
    SIMULATED,
    casts,
    new_status,
    sign,
)
from mpicomp.compress.cuda.codec import CODECS  # noqa: E402
from mpicomp.compress.sparse import KEY, index_width, pack_indices  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

needs_kernels = pytest.mark.skipif(
    not SIMULATED and not device.cuda.is_available(),
    reason="needs NUMBA_ENABLE_CUDASIM=1 or a CUDA GPU")

SIZES = (1, 7, 8, 9, 63, 64, 65, 333, 1031)
DTYPES = (np.float32, np.float64)
SEED = 20240611


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """32-thread blocks under the simulator (it runs each thread of a block as a Python
    thread, idle ones included)."""
    if SIMULATED:
        monkeypatch.setattr(device, "THREADS", 32)


# --- helpers ---------------------------------------------------------------------------------
def codec_of(op):
    """The registered codec of ``op`` (one of the modules under test)."""
    codec = CODECS[type(op)]
    assert codec.__module__ in (casts.__name__, sign.__name__)
    return codec


def key_of(op, seed: int) -> int:
    """The key the CPU path draws first from ``default_rng(seed)`` (0: deterministic)."""
    return draw_key(np.random.default_rng(seed)) if op.randomised else 0


def cpu_payload(op, x, seed: int = SEED):
    """(buffer, extra header bytes, body) of the CPU's payload of ``x``."""
    buf = op.encode(x, np.random.default_rng(seed)).buffer
    head = HEADER_BYTES + op.extra_header
    return buf, buf[HEADER_BYTES:head].tobytes(), buf[head:]


def gpu_encode(op, x, key: int, scales=None):
    """(extra, body, status) of the device encode; the body starts as garbage (0xA5) so that a
    byte the kernels do not write shows up."""
    codec = codec_of(op)
    if scales is None:
        scales = codec.host_scales(op, x)
    size = op.nbytes_max(x.size, x.dtype) - HEADER_BYTES - op.extra_header
    body = np.full(size, 0xA5, dtype=np.uint8)
    status = new_status(np)
    extra = codec.encode(op, x, key, tuple(scales), body, status)
    return extra, body, status


def gpu_decode(op, extra, body, d, dtype, out, accumulate=False):
    """The status of the device decode of ``body`` into ``out``."""
    status = new_status(np)
    codec_of(op).decode(op, extra, body, d, np.dtype(dtype), out, accumulate, status)
    return status


def bits_of(a: np.ndarray) -> np.ndarray:
    """Bit patterns, so that −0.0 ≠ 0.0 and equal NaNs compare equal."""
    return a.view(np.uint32 if a.itemsize == 4 else np.uint64)


def limit_of(spec: str, dtype, d: int) -> float:
    """The largest magnitude the CPU encodes for ``spec`` without a ValueError."""
    info = np.finfo(dtype)
    if spec.startswith("fp16"):
        return FP16_MAX
    if spec.startswith("bf16"):
        return BF16_MAX
    if spec.startswith("natural"):
        return 2.0 ** (info.maxexp - 1)  # the largest power of two: it never rounds up
    if spec.startswith("randk"):
        return float(info.max) / d / 2  # times d/k ≤ d stays finite
    return float(info.max)


def mixed(d: int, dtype, limit: float, seed: int) -> np.ndarray:
    """Random values over many magnitudes, with zeros, −0.0, subnormals, the smallest normal
    and ±``limit`` planted at random coordinates."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    x = rng.standard_normal(d) * 10.0 ** rng.integers(-6, 7, d)
    special = np.array([0.0, -0.0, float(info.smallest_subnormal),
                        -3.0 * float(info.smallest_subnormal), float(info.tiny),
                        -1.5 * float(info.tiny), limit, -limit, 1.0, -0.0, 0.0])
    at = rng.choice(d, size=min(d, special.size), replace=False)
    x = np.clip(x, -limit, limit)
    x[at] = rng.permutation(special)[: at.size]
    return x.astype(dtype)


def fits(cases):
    """The (spec, d) cases whose operator can compress d values (rand-k: k ≤ d)."""
    return [(spec, d) for spec, d in cases if make_compressor(spec).min_length() <= d]


ENCODE_CASES = fits(
    [(s, d) for s in ("sign", "scaled_sign", "scaled_sign:block=5", "scaled_sign:block=64",
                      "natural") for d in SIZES]
    + [(s, d) for s in ("identity", "fp16", "bf16") for d in (1, 7, 65, 333)]
    + [(s, d) for s in ("randk:k=5", "randk:k=0.3") for d in (1, 7, 9, 64, 65, 333)]
    + [(s, d) for s in ("randk:k=0.02", "randk:k=3,shared=1", "randk:k=0.3,shared=1")
       for d in (1, 9, 333)]
)
DECODE_CASES = fits(
    (s, d) for s in ("identity", "fp16", "bf16", "natural", "sign", "scaled_sign",
                     "scaled_sign:block=5", "scaled_sign:block=64", "randk:k=5", "randk:k=0.3",
                     "randk:k=3,shared=1", "randk:k=0.3,shared=1")
    for d in (1, 9, 65, 333))


# --- encode ----------------------------------------------------------------------------------
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize(("spec", "d"), ENCODE_CASES)
def test_encode_matches_cpu_bytes(spec, d, dtype):
    op = make_compressor(spec)
    x = mixed(d, dtype, limit_of(spec, dtype, d), seed=d)
    _, cpu_extra, cpu_body = cpu_payload(op, x)
    extra, body, status = gpu_encode(op, x, key_of(op, SEED))
    assert extra == cpu_extra
    mismatch = np.flatnonzero(body != cpu_body)
    assert mismatch.size == 0, f"bytes differ from byte {mismatch[:1]} on ({mismatch.size})"
    assert (status == NONE).all()


def test_randk_cases_cover_both_index_sections():
    """The rand-k cases above send packed indices and bitmaps (shared=0)."""
    kinds = set()
    for spec, d in ENCODE_CASES:
        op = make_compressor(spec)
        if spec.startswith("randk") and not op.shared:
            kinds.add(op.k_of(d) * index_width(d) <= d)
    assert kinds == {True, False}


EDGE16 = [1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 2**-25, 3 * 2**-25, -(2**-25), 2**-26,
          2**-14, 2**-14 - 2**-25, 2**-14 - 2**-24, 5 * 2**-26, 65504.0, -65504.0, 65488.0,
          2048 + 1, 2048 + 3, 0.1, -1e-30, 1e-40, 0.0, -0.0, 3.0e-8, 6.0e-8, -6.0e-5]


def edge_vector(spec: str, dtype) -> np.ndarray:
    """Values at the rounding boundaries of ``spec`` (ties, subnormal results, the top of the
    range), for the casts and natural compression."""
    f32 = np.float32
    if spec == "fp16":
        x = np.array(EDGE16)
        if dtype == np.float64:  # just above / below a tie: float32 cannot hold the offsets
            x = np.concatenate([x, [1 + 2**-11 + 2**-40, 1 + 2**-11 - 2**-40, 2**-25 + 2**-60]])
        return x.astype(dtype)
    if spec == "bf16":
        patterns = np.array([0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F818001, 0x7F7F7FFF,
                             0xFF7F7FFF, 0x00008000, 0x00018000, 0x80007FFF, 0x00000001,
                             0x007FFFFF, 0x7F000000, 0x00000000, 0x80000000], np.uint32)
        x = patterns.view(f32).astype(dtype)
        if dtype == np.float64:  # float64 → float32 rounding first: ties, subnormals, range
            # halfway between two float32s whose bfloat16 roundings differ: the float32 tie
            # (to even) decides the bfloat16, also for a subnormal float32
            pairs = np.array([[0x3F808000, 0x3F808001], [0x00008000, 0x00008001]], np.uint32)
            between = pairs.view(f32).astype(np.float64).mean(axis=1)
            x = np.concatenate([x, between, [1 + 2**-24, 1 + 3 * 2**-24, 1 + 2**-24 + 2**-50,
                                             7e-46, 8e-46, 1e-46, 2.0**-149 * 1.5,
                                             2.0**-149 * 2.5, -1e-300, 3.38e38,
                                             float(BF16_MAX), 1e-39]])
        return x
    info = np.finfo(dtype)
    return np.array([0.0, -0.0, float(info.smallest_subnormal), -float(info.smallest_subnormal),
                     float(info.tiny) * 0.75, float(info.tiny), 2.0**(info.maxexp - 1),
                     -(2.0**(info.maxexp - 1)), 1.5 * 2.0**(info.maxexp - 2), 1.0, -1.0,
                     0.75, 3.0, -(2.0**-20)], dtype=dtype)


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("spec", ["identity", "fp16", "bf16", "natural"])
def test_cast_edge_values(spec, dtype):
    op = make_compressor(spec)
    x = edge_vector("natural" if spec == "identity" else spec, dtype)
    buf, cpu_extra, cpu_body = cpu_payload(op, x)
    extra, body, status = gpu_encode(op, x, key_of(op, SEED))
    assert np.array_equal(body, cpu_body), np.flatnonzero(body != cpu_body)
    assert (status == NONE).all()
    out = np.empty(x.size, dtype)
    assert (gpu_decode(op, extra, cpu_body, x.size, dtype, out) == NONE).all()
    assert np.array_equal(bits_of(out), bits_of(op.decode(buf, x.size, dtype)))


# --- decode ----------------------------------------------------------------------------------
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize(("spec", "d"), DECODE_CASES)
def test_decode_matches_cpu(spec, d, dtype):
    op = make_compressor(spec)
    x = mixed(d, dtype, limit_of(spec, dtype, d), seed=d + 1)
    buf, extra, body = cpu_payload(op, x, seed=d)
    out = np.full(d, np.nan, dtype=dtype)
    assert (gpu_decode(op, extra, body, d, dtype, out) == NONE).all()
    assert np.array_equal(bits_of(out), bits_of(op.decode(buf, d, dtype)))

    acc = np.random.default_rng(d).standard_normal(d) * 1e-3
    acc[::3] = -0.0  # −0.0 + 0.0 is +0.0: where the decode is zero, the sum must be too
    want = op.decode_add(buf, d, dtype, acc.copy())
    assert (gpu_decode(op, extra, body, d, dtype, acc, accumulate=True) == NONE).all()
    assert np.array_equal(bits_of(acc), bits_of(want))


# --- status: what the CPU rejects ------------------------------------------------------------
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("spec", ["identity", "fp16", "bf16", "natural", "sign",
                                  "scaled_sign:block=4", "randk:k=3", "randk:k=0.5,shared=1"])
def test_non_finite_input_reported_at_first_coordinate(spec, dtype):
    op = make_compressor(spec)
    x = np.linspace(-2, 2, 20).astype(dtype)
    x[13], x[6], x[17] = np.inf, np.nan, -np.inf
    scales = () if spec != "scaled_sign:block=4" else (np.ones(5, dtype),)
    _, _, status = gpu_encode(op, x, key_of(op, SEED), scales)
    assert status[NON_FINITE] == 6
    assert status[REJECTED] == NONE  # NaN/Inf are the NON_FINITE slot's alone
    with pytest.raises(ValueError, match="index 6"):
        op.encode(x, np.random.default_rng(SEED))


def rejected_vector(spec: str, dtype, key: int) -> tuple[np.ndarray, int]:
    """A finite vector the CPU rejects for ``spec``, and the first coordinate it rejects."""
    x = np.linspace(-3, 3, 24).astype(dtype)
    if spec == "fp16":
        x[[9, 15]] = [65504.5, -70000.0]  # 65504.5 would round to 65504: still rejected
        return x, 9
    if spec == "bf16":
        if dtype == np.float32:  # rounds up from the largest bfloat16's odd last bit
            x[[5, 11]] = np.array([0x7F7F8000, 0xFF7FFFFF], np.uint32).view(np.float32)
        else:  # beyond float32 (Inf after the first rounding), and a bfloat16 overflow
            x[[5, 11]] = [-3.5e38, 3.4e38]
        return x, 5
    if spec == "natural":
        x[[4, 8, 20]] = np.finfo(dtype).max  # rounds up with probability 1 − 2^-M
        _, bad = numpy_kernels.natural_fields(x, key)
        assert bad >= 0
        return x, bad
    # randk: every kept value times d/k = 2 overflows
    x[:] = np.finfo(dtype).max * 0.75
    idx = make_compressor(spec)._indices(key, x.size)
    return x, int(idx[0])


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("spec", ["fp16", "bf16", "natural", "randk:k=0.5",
                                  "randk:k=0.5,shared=1"])
def test_rejected_input_reported_at_first_coordinate(spec, dtype):
    op = make_compressor(spec)
    key = key_of(op, SEED)
    x, first = rejected_vector(spec, dtype, key)
    with pytest.raises(ValueError):
        op.encode(x, np.random.default_rng(SEED))
    _, _, status = gpu_encode(op, x, key)
    assert status[REJECTED] == first
    assert status[NON_FINITE] == NONE


def corrupt(spec: str, body: np.ndarray, d: int, dtype) -> tuple[np.ndarray, int]:
    """A copy of the CPU body with a field the CPU decoder rejects, and that coordinate."""
    body = body.copy()
    if spec == "natural":
        width = 1 + np.finfo(dtype).nexp
        fields = unpack_fields(body, width, d).astype(np.uint32)
        fields[[7, 12]] |= (1 << (width - 1)) - 1  # exponent all ones
        body[:] = pack_fields(fields, width)
        return body, 7
    if spec in ("fp16", "bf16"):
        body.view(np.uint16)[[3, 10]] = 0x7C00 if spec == "fp16" else 0xFF80  # ±Inf
        return body, 3
    if spec == "identity":
        body.view(dtype)[[2, 8]] = [np.nan, np.inf]
        return body, 2
    if spec == "scaled_sign:block=4":
        scales = body[: 6 * np.dtype(dtype).itemsize].view(dtype)  # 6 blocks of 4
        scales[[2, 4]] = [-1.0, np.nan]  # a negative scale, a NaN one
        return body, 8
    raise AssertionError(spec)


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("spec", ["natural", "fp16", "bf16", "identity", "scaled_sign:block=4"])
def test_corrupted_body_rejected_on_decode(spec, dtype):
    op = make_compressor(spec)
    d = 24
    x = np.linspace(-3, 3, d).astype(dtype)
    buf, extra, body = cpu_payload(op, x)
    bad, first = corrupt(spec, body, d, dtype)
    bad_buf = np.concatenate([buf[: buf.size - body.size], bad])
    with pytest.raises(DecodeError):
        op.decode(bad_buf, d, dtype)
    assert_rejected_on_the_device(op, extra, bad, d, dtype, first)


def assert_rejected_on_the_device(op, extra, body, d, dtype, first):
    """Decoding ``body`` on the device, plain and accumulating, reports REJECTED at
    coordinate ``first`` and nothing as non-finite."""
    for accumulate, out in ((False, np.empty(d, dtype)), (True, np.zeros(d))):
        status = gpu_decode(op, extra, body, d, dtype, out, accumulate)
        assert status[REJECTED] == first
        assert status[NON_FINITE] == NONE


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize(("spec", "d", "damage"), [
    ("randk:k=4", 64, "swap"),  # packed indices that stop increasing
    ("randk:k=4", 64, "overflow"),  # a kept value whose × d/k overflows
    ("randk:k=4", 64, "nan"),
    ("randk:k=0.5", 24, "extra bit"),  # a bitmap with k + 1 bits set
    ("randk:k=0.5", 24, "lost bit"),  # a bitmap with k − 1 bits set
    ("randk:k=0.5", 24, "nan"),
    ("randk:k=0.5,shared=1", 24, "nan"),
    ("randk:k=0.5,shared=1", 24, "overflow"),
])
def test_corrupted_randk_rejected_on_decode(spec, d, damage, dtype):
    op = make_compressor(spec)
    key = key_of(op, SEED)
    idx = op._indices(key, d)
    k = idx.size
    values = np.linspace(-3, 3, k).astype(dtype)
    if damage in ("nan", "overflow"):
        values[1] = np.nan if damage == "nan" else np.finfo(dtype).max
        first = int(idx[1])
    body = values.astype(np.dtype(dtype).newbyteorder("<")).view(np.uint8)
    if not op.shared:
        width = index_width(d)
        section = pack_indices(idx, d)[0].copy()
        if damage == "swap":
            fields = unpack_fields(section, width, k).astype(np.uint32)
            fields[[1, 2]] = fields[[2, 1]]
            section, first = pack_fields(fields, width), 2
        if damage == "extra bit":
            spare = int(np.setdiff1d(np.arange(d), idx)[0])
            section[spare >> 3] |= np.uint8(1 << (spare & 7))
            first = int(np.sort(np.append(idx, spare))[k])  # the set bit past the k-th
        if damage == "lost bit":
            section[idx[0] >> 3] &= np.uint8(0xFF ^ (1 << (idx[0] & 7)))
            first = d - 1  # too few bits: reported at the last coordinate
        body = np.concatenate([body, section])
    extra = KEY.pack(key) if op.shared else b""
    header = HEADER.pack(MAGIC, op.code, DTYPE_CODES[np.dtype(dtype)], 0, d) + extra
    with pytest.raises(DecodeError):
        op.decode(np.concatenate([np.frombuffer(header, np.uint8), body]), d, dtype)
    assert_rejected_on_the_device(op, extra, body, d, dtype, first)


# --- scaled sign: the device scales ----------------------------------------------------------
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("block", (0, 5, 64))
def test_scaled_sign_device_scales_match_host(block, dtype):
    pytest.importorskip("mpicomp.compress.cuda.reduce")
    op = make_compressor(f"scaled_sign:block={block}")
    codec = codec_of(op)
    x = mixed(333, dtype, float(np.finfo(dtype).max), seed=block)
    if dtype == np.float64:  # ℓ1 sums that overflow: block_mean_abs's fallback
        x[64:69] = [1.7e308, -1.7e308, 1.6e308, 1e308, -1e-300]
    (want,) = codec.host_scales(op, x)
    block = max(block, 1) if block else x.size
    overflowed = np.isinf(norms(x.astype(np.float64), block, 1))
    assert overflowed.any() == (dtype == np.float64)
    (got,) = codec.scales(op, np.asarray(x))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_scaled_sign_host_scales_are_the_payload_scales():
    op = make_compressor("scaled_sign:block=64")
    x = mixed(200, np.float64, 1.7e308, seed=3)
    _, _, body = cpu_payload(op, x)
    (scales,) = codec_of(op).host_scales(op, x)
    assert scales.dtype == np.float64 and scales.size == 4
    assert np.array_equal(body[: scales.nbytes].view(np.float64), scales)


# --- PTX for sm_90 ---------------------------------------------------------------------------
PTX_SCRIPT = textwrap.dedent("""
    import sys
    from numba import cuda, types as t
    from numba.cuda.dispatcher import CUDADispatcher
    from mpicomp.compress.cuda import casts, sign

    def a(ty):
        return ty[::1]

    f32, f64, u8, u16, u32, u64 = t.float32, t.float64, t.uint8, t.uint16, t.uint32, t.uint64
    i64, b = t.int64, t.boolean
    st = a(i64)
    try:
        cuda.compile_ptx(lambda o: None, (a(f32),), cc=(9, 0))
    except Exception as exc:  # no NVVM here: nothing to check
        print("SKIP", type(exc).__name__, exc)
        sys.exit(0)
    cases = [
        (casts._pack_index_fields, (a(i64), i64, a(u8))),
        (casts._pack_index_bitmap, (a(i64), i64, a(u8))),
        (casts._read_index_fields, (a(u8), i64, i64, a(i64), st)),
        (casts._bitmap_counts, (a(u8), i64, a(i64))),
    ]
    for fl, ui in ((f32, u32), (f64, u64)):
        cases += [
            (casts._scan_finite, (a(fl), st)),
            (casts._identity_encode, (a(fl), a(ui), a(ui), st)),
            (casts._fp16_encode, (a(fl), a(ui), i64, i64, a(u16), st)),
            (casts._bf16_encode, (a(fl), a(ui), i64, i64, a(u16), st)),
            (casts._natural_pack, (a(ui), u64, i64, i64, a(u8), st)),
            (casts._randk_gather, (a(fl), a(ui), a(i64), f64, b, a(ui), st)),
            (sign._sign_pack, (a(fl), a(u8), a(u8), st)),
            (sign._block_means, (a(f64), a(f64), a(f64), i64, i64, a(fl))),
        ]
        for out in sorted({fl, f64}, key=str):  # decode (payload dtype) and accumulate (f64)
            cases += [
                (casts._copy_checked, (a(fl), a(out), b, st)),
                (casts._decode_halfwords, (a(u16), i64, i64, a(out), b, st)),
                (casts._natural_unpack, (a(u8), i64, a(out), b, st)),
                (casts._randk_expand, (a(i64), a(fl), f64, b, a(out), b, st)),
                (casts._bitmap_expand, (a(u8), a(i64), a(i64), a(fl), f64, b, a(out), b, st)),
                (sign._sign_unpack, (a(u8), a(fl), i64, a(out), b, st)),
            ]
    kernels = {obj for mod in (casts, sign) for obj in vars(mod).values()
               if isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device")}
    missing = sorted(k.py_func.__name__ for k in kernels - {k for k, _ in cases})
    if missing:
        print("NOT CHECKED", missing)
        sys.exit(1)
    failed = 0
    for kernel, sig in cases:
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
            assert ".target sm_90" in ptx
        except Exception as exc:
            failed += 1
            print("FAIL", kernel.py_func.__name__, sig, type(exc).__name__, exc)
    print(f"compiled {len(cases) - failed} of {len(cases)}")
    sys.exit(1 if failed else 0)
""")


def test_kernels_compile_to_ptx_for_sm90():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    run = subprocess.run([sys.executable, "-c", PTX_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    if run.stdout.startswith("SKIP"):
        pytest.skip(f"compile_ptx unavailable: {run.stdout.strip()}")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "compiled 38 of 38" in run.stdout
