"""The compiled half-precision casts, one-pass sign packing and TernGrad's σ against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.compress import kernels, numba_kernels, numpy_kernels

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="compares the compiled kernels")


def float_patterns(dtype, n, seed=0):
    """Finite values of ``dtype`` with exponents across the float16 range, subnormal halves
    and exact ties of the float16 and bfloat16 grids."""
    rng = np.random.default_rng(seed)
    v = np.ldexp(1 + rng.integers(0, 2**23, n) / 2**23, rng.integers(-30, 16, n))
    ties = rng.random(n) < 0.3
    count = int(ties.sum())
    v[ties] = np.ldexp(2.0 * rng.integers(1, 2**11, count) + 1, rng.integers(-40, 5, count))
    v *= rng.choice([-1.0, 1.0], n)
    v[rng.random(n) < 0.05] = 0.0
    return np.clip(v, -65504, 65504).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fp16_pack_rounds_like_numpy(dtype):
    x = float_patterns(dtype, 200_003)
    want = x.astype("<f2").view(np.uint8)
    got = np.empty(2 * x.size, np.uint8)
    assert numba_kernels.fp16_pack(x, got)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fp16_pack_flags_overflow_and_non_finite(dtype):
    for bad in (65505.0, -7e4, np.inf, np.nan):
        x = float_patterns(dtype, 100)
        x[37] = bad
        assert not numba_kernels.fp16_pack(x, np.empty(200, np.uint8))
        assert not numpy_kernels.fp16_pack(x, np.empty(200, np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind, exponent", [("fp16", 0x7C00), ("bf16", 0x7F80)])
def test_half_decoders_are_exact_for_every_pattern(dtype, kind, exponent):
    patterns = np.arange(2**16, dtype=np.uint16)
    finite = patterns[(patterns & exponent) != exponent]
    compiled = getattr(numba_kernels, f"{kind}_unpack")
    reference = getattr(numpy_kernels, f"{kind}_unpack")
    got, want = np.empty(finite.size, dtype), np.empty(finite.size, dtype)
    assert compiled(finite.view(np.uint8), got) == reference(finite.view(np.uint8), want) == -1
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))
    for bad in (exponent, exponent | 0x8001, exponent | 0x0040):  # ±Inf, NaNs
        body = finite.copy()
        body[5000] = bad
        assert compiled(body.view(np.uint8), got) == reference(body.view(np.uint8), want) == 5000


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bf16_pack_rounds_like_the_reference(dtype):
    x = float_patterns(dtype, 100_001) * dtype(1e30 if dtype == np.float64 else 1e3)
    got, want = np.empty(2 * x.size, np.uint8), np.empty(2 * x.size, np.uint8)
    assert numba_kernels.bf16_pack(x, got) == numpy_kernels.bf16_pack(x, want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 4])  # a body that is not 8-byte aligned
def test_sign_pack_is_one_pass_and_exact(dtype, offset):
    for d in (1, 63, 64, 65, 1000, 4097):
        x = np.random.default_rng(d).standard_normal(d).astype(dtype)
        x[::7] = 0.0
        x[::11] = -0.0  # sign(−0) = +1
        raw = np.empty(offset + -(-d // 8), np.uint8)
        out = raw[offset:]
        assert numba_kernels.sign_pack(x, out)
        np.testing.assert_array_equal(out, np.packbits(x < 0, bitorder="little"))
        x[d // 2] = np.nan
        assert not numba_kernels.sign_pack(x, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_std_matches_numpy_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    for d, block in ((1, 1), (7, 3), (129, 128), (1000, 1000), (8193, 8193), (20000, 20000),
                     (100_003, 512), (100_003, 100_003), (300_001, 300_001)):
        x = (rng.standard_normal(d) * np.exp(rng.uniform(-4, 4, d)) + 5).astype(dtype)
        want = numpy_kernels.clip_bounds(x, block, 2.5)
        got = numba_kernels.clip_bounds(x, block, 2.5)
        np.testing.assert_array_equal(got, want)
