"""The GPU kernels of the level operators (`mpicomp.compress.cuda.levels`) and the per-block
reductions (`mpicomp.compress.cuda.reduce`) against the CPU path, under Numba's CUDA simulator:
the same body bytes for the same vector, key and block scales; bit-identical decoded values
(also accumulated); the status slots for NaN/Inf input, overflowing norms and corrupted bodies;
the reductions against NumPy; and PTX for sm_90 of every kernel (NVVM, without the simulator),
with no fused multiply-add in the level kernels."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mpicomp.compress import numba_kernels, numpy_kernels
from mpicomp.compress.base import DTYPE_CODES, HEADER, MAGIC, DecodeError, NonFiniteVector
from mpicomp.compress.bitpack import pack_fields, unpack_fields
from mpicomp.compress.counter_rng import draw_key
from mpicomp.compress.dithering import QSGD, Dither, NaturalDither, TernGrad
from mpicomp.compress.uniform import Uniform

pytest.importorskip("numba.cuda")

import mpicomp.compress.cuda as cuda_package  # noqa: E402
from mpicomp.compress.cuda import NON_FINITE, NONE, REJECTED, levels, new_status  # noqa: E402
from mpicomp.compress.cuda import reduce as device_reduce  # noqa: E402
from mpicomp.compress.cuda.bits import packed_bytes  # noqa: E402
from mpicomp.compress.cuda.codec import CODECS  # noqa: E402
from mpicomp.compress.cuda.levels import DitherCodec, NaturalDitherCodec, UniformCodec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the simulator runs the kernels on NumPy scalars: splitmix64's uint64 arithmetic wraps, and
# NaN/Inf inputs and overflowing norms meet NumPy's float warnings
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]

DTYPES = (np.float32, np.float64)
SIZES = (1, 7, 63, 64, 65, 333, 1031, 7, 63, 65, 333)  # each size, d = 1031 less often
BLOCKS = (0, 5, 64)

OPERATORS = (
    [Dither(p, s) for p in (1, 2, "inf") for s in (1, 3, 7, 15, 255)]
    + [QSGD(4), TernGrad(), TernGrad(clip=2.5)]
    + [NaturalDither(p, s) for s in (2, 8, 30) for p in (2, "inf")]
    + [Uniform(bits, rounding=r) for bits in (1, 4, 8, 12) for r in ("nearest", "stochastic")]
)


@pytest.fixture(autouse=True)
def warp_sized_launches(monkeypatch):
    """Launch 32 threads a block instead of 256: the simulator runs every thread of a block,
    also those past the end, so small vectors cost 8 times less (the kernels index by
    ``cuda.grid(1)`` and work for any block size)."""
    monkeypatch.setattr(cuda_package, "THREADS", 32)


def with_block(op, block: int):
    """``op`` with block length ``block`` (the operators above are built with block 0)."""
    if isinstance(op, Uniform):
        return Uniform(op.bits, block, op.rounding)
    if isinstance(op, TernGrad):
        return TernGrad(block, op.clip)
    if isinstance(op, QSGD):
        return QSGD(op.s, block)
    if isinstance(op, NaturalDither):
        return NaturalDither(op.p, op.s, block)
    return Dither(op.p, op.s, block)


def vector(d: int, dtype, seed: int) -> np.ndarray:
    """Normal values with zeros (both signs), a constant run, and huge and tiny entries."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d)
    huge, tiny = (1e30, 1e-41) if dtype == np.float32 else (1e150, 1e-310)
    kinds = rng.integers(0, 8, d)
    x[kinds == 0] = 0.0
    x[kinds == 1] = -0.0
    x[kinds == 2] *= huge
    x[kinds == 3] *= tiny
    x[d // 3 : d // 3 + 9] = 0.75  # a constant run (it holds a whole block of 5)
    return x.astype(dtype)


def cases():
    """(operator, dtype, d, input) covering every operator in both dtypes, every size and block
    (rotating, so the d = 1031 runs stay few), plus all-zero and constant vectors."""
    out = []
    for i, base in enumerate(OPERATORS):
        for k, dtype in enumerate(DTYPES):
            n = 2 * i + k
            d, block = SIZES[n % len(SIZES)], BLOCKS[n % len(BLOCKS)]
            kind = ("random", "random", "zeros", "random", "constant")[n % 5]
            out.append(pytest.param(with_block(base, block), dtype, d, kind,
                                    id=f"{with_block(base, block).spec()}-{np.dtype(dtype)}-"
                                       f"d{d}-{kind}"))
    return out


def make_input(d: int, dtype, kind: str, seed: int = 3) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(d, dtype=dtype)
    if kind == "constant":
        return np.full(d, -2.5, dtype=dtype)
    return vector(d, dtype, seed)


def cpu_message(op, x, seed: int = 11):
    """(CPU payload, the key it drew, its extra header, its body)."""
    payload = op.encode(x, np.random.default_rng(seed))
    key = draw_key(np.random.default_rng(seed)) if op.randomised else 0
    head = 8 + op.extra_header
    return payload, key, payload.buffer[8:head].tobytes(), payload.buffer[head:]


def device_encode(op, x, key, scales, size: int):
    """(extra header, body, status) of the device encoder; the body starts as garbage, so every
    byte must be written."""
    body = np.full(size, 0xA5, dtype=np.uint8)
    status = new_status(np)
    extra = CODECS[type(op)].encode(op, x, key, scales, body, status)
    return extra, body, status


def device_decode(op, body, d, dtype, out, accumulate=False):
    status = new_status(np)
    CODECS[type(op)].decode(op, b"", body, d, dtype, out, accumulate, status)
    return status


# --- 1, 2: bytes and values as on the CPU ------------------------------------------------------
@pytest.mark.parametrize("op, dtype, d, kind", cases())
def test_device_body_is_the_cpu_body_byte_for_byte(op, dtype, d, kind):
    x = make_input(d, dtype, kind)
    _, key, cpu_extra, cpu_body = cpu_message(op, x)
    codec = CODECS[type(op)]
    assert codec.supports(op)
    extra, body, status = device_encode(op, x, key, codec.host_scales(op, x), cpu_body.size)
    assert extra == cpu_extra
    assert list(status) == [NONE, NONE]
    mismatch = np.flatnonzero(body != cpu_body)
    assert mismatch.size == 0, f"{mismatch.size} bytes differ, first at {mismatch[:1]}"


@pytest.mark.parametrize("op, dtype, d, kind", cases())
def test_device_decode_is_the_cpu_decode_bit_for_bit(op, dtype, d, kind):
    x = make_input(d, dtype, kind)
    payload, _, _, cpu_body = cpu_message(op, x)
    out = np.full(d, np.nan, dtype=dtype)
    assert list(device_decode(op, cpu_body, d, dtype, out)) == [NONE, NONE]
    np.testing.assert_array_equal(out.view(f"u{out.itemsize}"),
                                  op.decode(payload.buffer, d, dtype).view(f"u{out.itemsize}"))
    start = np.random.default_rng(5).standard_normal(d) * 1e-3
    acc = start.copy()
    assert list(device_decode(op, cpu_body, d, dtype, acc, accumulate=True)) == [NONE, NONE]
    want = op.decode_add(payload.buffer, d, dtype, start.copy())
    np.testing.assert_array_equal(acc.view(np.uint64), want.view(np.uint64))


def test_codecs_serve_exactly_the_dense_coders():
    assert isinstance(CODECS[Dither], DitherCodec) and CODECS[QSGD] is CODECS[Dither]
    assert CODECS[TernGrad] is CODECS[Dither]
    assert isinstance(CODECS[NaturalDither], NaturalDitherCodec)
    assert isinstance(CODECS[Uniform], UniformCodec)
    for op in (Dither(2, 3, coder="elias"), QSGD(4, coder="golomb"), TernGrad(pack="trits")):
        assert not CODECS[type(op)].supports(op), op.spec()
    for op in (Dither(2, 3), QSGD(4), TernGrad(clip=2.5), NaturalDither(), Uniform()):
        assert CODECS[type(op)].supports(op), op.spec()


def test_uniform_nearest_ignores_the_key():
    op = Uniform(4, 5)
    x = vector(63, np.float32, 1)
    _, key, _, cpu_body = cpu_message(op, x)
    assert key == 0
    scales = CODECS[Uniform].host_scales(op, x)
    _, body, _ = device_encode(op, x, 0x0123456789ABCDEF, scales, cpu_body.size)
    np.testing.assert_array_equal(body, cpu_body)


def test_terngrad_clip_acts_inside_the_kernel():
    """The kernel quantises the clipped vector: with norms 1.5 times the CPU's, the level of a
    clipped outlier is random (with the CPU's norms it is 1 whatever the clip), and the bytes
    are those of the CPU's level kernel on ``np.clip(x, -bound, bound).astype(x.dtype)``."""
    x = np.random.default_rng(4).standard_normal(65).astype(np.float32)
    x[[3, 40, 64]] = [50.0, -80.0, 30.0]
    op = TernGrad(block=64, clip=2.5)
    nu, bound, bound_cast = CODECS[TernGrad].host_scales(op, x)
    nu = nu * np.float32(1.5)
    clipped = op._prepare(x)[0]

    def cpu_fields(v, key):
        fields = np.zeros(packed_bytes(v.size, 2), dtype=np.uint8)
        scale = np.where(nu > 0, 1.0 / np.maximum(nu, 1).astype(np.float64), 0.0)
        numpy_kernels.dither_levels(v, scale, 64, 1, np.uint64(key), 2, fields)
        return fields

    unclipped_differs = []
    for key in (1, 2, 3, 4):
        _, body, status = device_encode(op, x, key, (nu, bound, bound_cast), 2 * 4 + 17)
        np.testing.assert_array_equal(body, np.concatenate([nu.view(np.uint8),
                                                            cpu_fields(clipped, key)]))
        assert list(status) == [NONE, NONE]
        unclipped_differs.append(not np.array_equal(body[8:], cpu_fields(x, key)))
    assert any(unclipped_differs)


# --- 3: status slots ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", [Dither(2, 3, 5), TernGrad(block=5, clip=2.5),
                                NaturalDither("inf", 8), Uniform(4, 5, "stochastic")],
                         ids=lambda op: op.spec())
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_input_is_reported_at_its_first_coordinate(op, dtype):
    x = vector(40, dtype, 2)
    x[[17, 31]] = [np.nan, -np.inf]
    with pytest.raises(NonFiniteVector):
        op.encode(x, np.random.default_rng(0))
    codec = CODECS[type(op)]
    size = op.nbytes_max(x.size, dtype) - 8
    _, _, status = device_encode(op, x, 7, codec.scales(op, x), size)
    assert status[NON_FINITE] == 17


@pytest.mark.parametrize("op, dtype, values, first", [
    (Dither(1, 3, 5), np.float32, {6: 3e38, 8: 3e38}, 5),  # Σ|x| of block 1 > float32 max
    (Dither(2, 7), np.float32, {20: 3e38, 21: -3e38}, 0),  # ‖x‖₂ > float32 max
    (QSGD(4, 5), np.float64, {12: 1e200}, 10),  # x² overflows float64
])
def test_a_norm_that_overflows_the_dtype_is_rejected_at_its_block(op, dtype, values, first):
    x = vector(23, dtype, 5)
    for j, v in values.items():
        x[j] = v
    with pytest.raises(ValueError, match="exceeds|overflows"):
        op.encode(x, np.random.default_rng(0))
    codec = CODECS[type(op)]
    size = op.nbytes_max(x.size, dtype) - 8
    for scales in (codec.scales(op, x), codec.host_scales(op, x)):
        assert np.isinf(scales[0]).sum() == 1
        _, _, status = device_encode(op, x, 7, scales, size)
        assert list(status) == [NONE, first]


def corrupt_fields(body, head: int, width: int, d: int, fields: dict) -> np.ndarray:
    """``body`` with the packed fields at ``head`` replaced at the given coordinates."""
    f = unpack_fields(body[head:], width, d).astype(np.uint32)
    for j, v in fields.items():
        f[j] = v
    return np.concatenate([body[:head], pack_fields(f, width)])


def corrupt_scalar(body, k: int, dtype, value) -> np.ndarray:
    out = body.copy()
    out[k * np.dtype(dtype).itemsize : (k + 1) * np.dtype(dtype).itemsize] = (
        np.array([value], dtype=dtype).view(np.uint8))
    return out


def decode_rejection(op, body, d, dtype):
    """The device status of decoding ``body``, which the CPU decoder rejects (DecodeError)."""
    header = HEADER.pack(MAGIC, op.code, DTYPE_CODES[np.dtype(dtype)], 0, d)
    with pytest.raises(DecodeError):
        op.decode(np.concatenate([np.frombuffer(header, np.uint8), body]), d, dtype)
    return device_decode(op, body, d, dtype, np.empty(d, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_corrupted_dither_bodies_are_rejected_at_the_first_bad_coordinate(dtype):
    op, d = Dither(2, 5, 5), 23  # width 4: levels up to 7 fit, s = 5
    x = vector(d, dtype, 6)
    _, _, _, body = cpu_message(op, x)
    head, width = 5 * np.dtype(dtype).itemsize, op.level_coder.width
    sign = 1 << (width - 1)
    assert list(decode_rejection(op, corrupt_fields(body, head, width, d, {9: 7}), d, dtype)) \
        == [NONE, 9]  # a level above s
    both = corrupt_fields(body, head, width, d, {9: 6, 3: sign})  # and a sign bit on level 0
    assert list(decode_rejection(op, both, d, dtype)) == [NONE, 3]
    assert decode_rejection(op, corrupt_scalar(body, 1, dtype, -1.0), d, dtype)[REJECTED] == 5
    assert decode_rejection(op, corrupt_scalar(body, 2, dtype, np.nan), d, dtype)[REJECTED] == 10
    assert decode_rejection(op, corrupt_scalar(body, 4, dtype, np.inf), d, dtype)[REJECTED] == 20
    padded = body.copy()
    padded[-1] |= 0x80  # 23·4 bits: the last byte has 4 padding bits
    assert decode_rejection(op, padded, d, dtype)[REJECTED] == d - 1


def test_corrupted_natural_dither_and_uniform_bodies_are_rejected():
    op, d, dtype = NaturalDither(2, 2, 5), 12, np.float32  # width 3: level 3 > s = 2
    _, _, _, body = cpu_message(op, vector(d, dtype, 7))
    bad = corrupt_fields(body, 3 * 4, 3, d, {7: 3})
    assert list(decode_rejection(op, bad, d, dtype)) == [NONE, 7]
    assert decode_rejection(op, corrupt_scalar(body, 2, dtype, -0.5), d, dtype)[REJECTED] == 10

    op = Uniform(4, 5)
    _, _, _, body = cpu_message(op, vector(d, dtype, 7))
    lo1, hi1 = body[8:12].view(np.float32)[0], body[12:16].view(np.float32)[0]
    swapped = corrupt_scalar(corrupt_scalar(body, 2, dtype, hi1 + 1), 3, dtype, lo1)
    assert list(decode_rejection(op, swapped, d, dtype)) == [NONE, 5]  # lo > hi in block 1
    assert decode_rejection(op, corrupt_scalar(body, 5, dtype, np.nan), d, dtype)[REJECTED] == 10


# --- 4: reductions -----------------------------------------------------------------------------
def reference_norms(x, block, p):
    rows = [np.abs(x[b : b + block].astype(np.float64)) for b in range(0, x.size, block)]
    if p == 1:
        return np.array([r.sum() for r in rows])
    if p == 2:
        return np.array([math.sqrt((r * r).sum()) for r in rows])
    return np.array([r.max() for r in rows])


def check_reductions(x, block, norms=(1, 2, math.inf), std=True):
    """block_norms, block_extremes and block_std of ``x`` against NumPy and the CPU kernels."""
    for p in norms:
        got = device_reduce.block_norms(x, block, p, np)
        assert got.dtype == np.float64
        want = reference_norms(x, block, p)
        if math.isinf(p):
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    lo, hi = device_reduce.block_extremes(x, block, np)
    want_lo, want_hi = np.empty(lo.size), np.empty(lo.size)
    numba_kernels.block_extremes(x, block, want_lo, want_hi)
    np.testing.assert_array_equal(lo.view(np.uint64), want_lo.view(np.uint64))
    np.testing.assert_array_equal(hi.view(np.uint64), want_hi.view(np.uint64))
    if std:
        got = device_reduce.block_std(x, block, np)
        want = [np.std(x[b : b + block], dtype=np.float64) for b in range(0, x.size, block)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def spread_vector(d, dtype, seed=8):
    x = vector(d, dtype, seed)
    x[::7] = np.abs(x[::7]) * 3 + 1  # mean and spread differ per block
    return x


@pytest.mark.parametrize("dtype, d, block", [
    (np.float32, 7, 7), (np.float64, 65, 5), (np.float32, 63, 32),  # one thread a block
    (np.float64, 130, 64), (np.float32, 1031, 1031),  # a CUDA block's tree a block
])
def test_block_reductions_match_numpy(dtype, d, block):
    check_reductions(spread_vector(d, dtype), block)


def test_long_blocks_reduce_in_several_passes(monkeypatch):
    """Parts of 4 values: 10 parts a block, whose results a tree reduces to 3, then one
    thread to 1."""
    monkeypatch.setattr(device_reduce, "CHUNK", 4)
    monkeypatch.setattr(device_reduce, "SEQUENTIAL_MAX", 3)
    check_reductions(spread_vector(40, np.float64), 40, norms=(1, math.inf), std=False)


def test_clipped_norms_are_the_norms_of_the_clipped_vector():
    """TernGrad's clip inside the reduction: bounds 2.5·σ_B, then the norms of
    ``np.clip(x, -bound, bound).astype(x.dtype)`` without that copy."""
    x = np.random.default_rng(12).standard_normal(200).astype(np.float32)
    x[[10, 150]] = [40.0, -60.0]
    bound, bound_cast = device_reduce.clip_bounds(x, 100, 2.5, np)
    sigma = [np.std(x[b : b + 100], dtype=np.float64) for b in (0, 100)]
    np.testing.assert_allclose(bound, 2.5 * np.array(sigma), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(bound_cast, bound.astype(np.float32))
    clipped = np.clip(x, -np.repeat(bound, 100), np.repeat(bound, 100)).astype(np.float32)
    assert np.abs(clipped).max() < 40
    got = device_reduce.block_norms(x, 100, math.inf, np, clip=(bound, bound_cast))
    np.testing.assert_array_equal(got, reference_norms(clipped, 100, math.inf))
    got = device_reduce.block_norms(x, 5, 1, np, clip=(np.repeat(bound, 20),
                                                       np.repeat(bound_cast, 20)))
    np.testing.assert_allclose(got, reference_norms(clipped, 5, 1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("block", [5, 40])
def test_extremes_keep_the_sign_of_the_first_zero(block):
    """A zero minimum (maximum) is the block's first zero, as the CPU's in-order scan keeps it
    (`numba_kernels.block_extremes`); the sign is in the body bytes of Uniform."""
    x = np.abs(vector(80, np.float32, 9)) + 1
    x[[1, 2, 41, 42]] = [-0.0, 0.0, 0.0, -0.0]
    x[60:62] = [0.0, -0.0]
    lo, _ = device_reduce.block_extremes(x, block, np)
    want, hi = np.empty(lo.size), np.empty(lo.size)
    numba_kernels.block_extremes(x, block, want, hi)
    np.testing.assert_array_equal(np.signbit(lo), np.signbit(want))
    assert np.signbit(want).any() and not np.signbit(want).all()
    _, hi = device_reduce.block_extremes(-x, block, np)
    np.testing.assert_array_equal(np.signbit(hi), ~np.signbit(want))


def test_round_up_matches_blockwise_round_up_and_overflows_to_inf():
    from mpicomp.compress import blockwise

    values = np.array([0.0, 1.0, 1 + 2.0**-30, 3e-45, 1e-50, 3.4028234e38, 3.4028236e38, 1e300])
    got = device_reduce.round_up(values, np.float32, np)
    np.testing.assert_array_equal(got[:6], blockwise.round_up(values[:6], np.float32))
    assert np.isinf(got[6:]).all()
    assert (got[:6].astype(np.float64) >= values[:6]).all()
    np.testing.assert_array_equal(device_reduce.round_up(values, np.float64, np), values)


@pytest.mark.parametrize("op", [Dither(1, 3, 5), Dither(2, 3), Dither("inf", 3, 64),
                                TernGrad(block=5, clip=2.5), NaturalDither(2, 8, 5),
                                Uniform(8, 64)], ids=lambda op: op.spec())
@pytest.mark.parametrize("dtype", DTYPES)
def test_device_scales_match_the_cpu_scales(op, dtype):
    x = vector(130, dtype, 10)
    x[100:110] = [9.0, -7.0] * 5  # outliers for the clip
    codec = CODECS[type(op)]
    got, want = codec.scales(op, x), codec.host_scales(op, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        if g.dtype == np.float32 or getattr(op, "p", 2) == math.inf or isinstance(op, Uniform):
            np.testing.assert_array_equal(g, w)  # maxima exact; float32 sums round alike here
        else:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=0)


# --- 5: PTX for sm_90 --------------------------------------------------------------------------
def kernel_signatures(X) -> dict:
    """{module: {kernel: argument types}} of every kernel for input vectors of type ``X``, as the
    host wrappers launch them (`test_the_launches_are_the_compiled_signatures` checks that)."""
    from numba import boolean, float64, int64, uint8, uint64

    F, N, B = float64[::1], int64[::1], uint8[::1]  # float64, index and byte arrays
    fold = (int64, boolean, boolean, F, F, X, F)  # mode, use_max, clipping, center, bounds, out
    candidates = (X, boolean, F, N, F, N, int64, int64)  # x, from_x, lo/hi and indices, n, block
    return {
        device_reduce: {
            "_reduce_sequential": (X, int64) + fold,
            "_reduce_tree": (X, int64, int64, int64) + fold,
            "_per_count": (F, int64, int64, boolean),
            "_sqrt": (F,),
            "_extremes_sequential": candidates + (F, N, F, N),
            "_extremes_tree": candidates + (int64, int64, F, N, F, N),
            "_round_up": (F, X),
            "_clip_bounds": (F, float64, F, X),
        },
        levels: {
            "_encode_levels": (X, X, boolean, F, X, int64, int64, boolean, uint64, int64, B, N),
            "_decode_levels": (B, int64, int64, int64, int64, int64, boolean, X, boolean,
                               boolean, N),
            "_encode_uniform": (X, F, F, int64, int64, boolean, uint64, int64, B, N),
            "_decode_uniform": (B, int64, int64, int64, int64, int64, X, boolean, boolean, N),
        },
    }


def test_the_launches_are_the_compiled_signatures(monkeypatch):
    """Every launch of a representative run (each codec, both dtypes, clip, accumulate, every
    reduction path) has argument types that `kernel_signatures` lists, for float32 or float64
    (the float32 input's later passes and float64 sums are the float64 kernels)."""
    from numba import float32, float64, typeof

    launched = set()

    def recording(original, geometry: int):
        """``original`` (a launcher whose first ``geometry`` arguments after the kernel are its
        sizes), noting the kernel and the types of its arguments."""
        def run(kernel, *args):
            module = levels if kernel in vars(levels).values() else device_reduce
            name = next(n for n, v in vars(module).items() if v is kernel)
            launched.add((module, name, tuple(typeof(a) for a in args[geometry:])))
            original(kernel, *args)
        return run

    monkeypatch.setattr(levels, "launch", recording(levels.launch, 1))
    monkeypatch.setattr(device_reduce, "launch", recording(device_reduce.launch, 1))
    monkeypatch.setattr(device_reduce, "launch_blocks",
                        recording(device_reduce.launch_blocks, 2))
    monkeypatch.setattr(device_reduce, "CHUNK", 16)  # several passes on the blocks of 40
    for dtype in DTYPES:
        x = vector(41, dtype, 13)
        for op in (Dither(2, 3, 40), TernGrad(5, clip=2.5), NaturalDither(1, 8, 5),
                   Uniform(4, 40, "stochastic"), Uniform(8, 5)):
            codec = CODECS[type(op)]
            scales = codec.scales(op, x)
            size = op.nbytes_max(x.size, dtype) - 8
            _, body, _ = device_encode(op, x, 7, scales, size)
            device_decode(op, body, x.size, dtype, np.empty(x.size, dtype))
            device_decode(op, body, x.size, dtype, np.zeros(x.size), accumulate=True)
    allowed = {(module, name, signature) for X in (float32[::1], float64[::1])
               for module, table in kernel_signatures(X).items()
               for name, signature in table.items()}
    assert {name for _, name, _ in launched} == {name for _, name, _ in allowed}
    assert launched <= allowed, launched - allowed


PTX_SCRIPT = textwrap.dedent("""
    import sys
    from numba import cuda, float32, float64
    from numba.cuda.dispatcher import CUDADispatcher

    sys.path.insert(0, sys.argv[1])
    from test_gpu_kernels_levels import kernel_signatures, levels

    for dtype, X in (("float32", float32[::1]), ("float64", float64[::1])):
        for module, table in kernel_signatures(X).items():
            kernels = {name for name, obj in vars(module).items()
                       if isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device")}
            assert kernels == set(table), ("kernels without a signature", kernels ^ set(table))
            for name, signature in table.items():
                ptx, _ = cuda.compile_ptx(getattr(module, name).py_func, signature, cc=(9, 0))
                assert ".target sm_90" in ptx, name
                if module is levels and "fma.rn.f64" in ptx:  # a contracted a·b + c
                    print(f"FMA {name}[{dtype}]")
                print(f"OK {name}[{dtype}]", flush=True)
""")


@pytest.fixture(scope="module", autouse=True)
def ptx_compilation():
    """The PTX compilation of every kernel, started in a subprocess (NVVM needs the simulator
    off) when this module's first test starts, so that it runs beside the simulator tests."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "PYTHONPATH": str(REPO)}
    job = subprocess.Popen([sys.executable, "-c", PTX_SCRIPT, str(REPO / "tests")], env=env,
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield job
    if job.poll() is None:  # the PTX test did not run
        job.kill()
        job.communicate()


def test_every_kernel_compiles_to_ptx_for_sm90_without_fused_multiply_add(ptx_compilation):
    """Typing for the device (int/float mixing, unsigned shifts) that the simulator does not
    check, and no FMA in the level kernels, whose arithmetic must round as the CPU's does."""
    stdout, stderr = ptx_compilation.communicate(timeout=600)
    assert ptx_compilation.returncode == 0, stderr[-3000:]
    lines = stdout.splitlines()
    assert not [line for line in lines if line.startswith("FMA")], stdout
    compiled = {line.split()[1] for line in lines if line.startswith("OK")}
    assert compiled == {f"{name}[{dtype}]" for dtype in ("float32", "float64")
                        for table in kernel_signatures(None).values() for name in table}
