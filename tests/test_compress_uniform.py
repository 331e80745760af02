"""`uniform`: the k-bit grid per block that quantised Adam sends weights on (SPEC §2.5).

Values are checked against the grid computed here from the definition, bit counts exactly,
stochastic rounding for unbiasedness and its variance bound by Monte Carlo (5 standard errors).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpicomp.compress import DecodeError, make_compressor
from mpicomp.compress.base import HEADER_BYTES

SIZES = [0, 1, 7, 8, 1025, 2**20 + 3]


def vector(d, dtype, seed=0):
    rng = np.random.default_rng(seed + d)
    return (rng.standard_normal(d) * np.exp(rng.uniform(-2, 2, d))).astype(dtype)


def blocks(d, block):
    b = d if block == 0 else block
    return [slice(i, min(i + b, d)) for i in range(0, d, max(b, 1))]


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits,block,rounding", [(1, 0, "nearest"), (4, 7, "nearest"),
                                                 (8, 300, "stochastic"), (16, 0, "stochastic")])
def test_values_lie_on_each_blocks_grid_within_one_step(d, dtype, bits, block, rounding):
    op = make_compressor(f"uniform:bits={bits},block={block},rounding={rounding}")
    x = vector(d, dtype)
    p = op.encode(x, np.random.default_rng(3))
    c = op.decode(p.buffer, d, dtype)
    n_blocks = len(blocks(d, block))
    width = 8 * np.dtype(dtype).itemsize
    assert p.nbits == 2 * width * n_blocks + bits * d
    assert p.nbytes == HEADER_BYTES + math.ceil(p.nbits / 8)
    if d == 0:
        return
    top = 2**bits - 1
    starts = np.array([sl.start for sl in blocks(d, block)])
    owner = np.repeat(np.arange(n_blocks), np.diff(np.append(starts, d)))
    lo = np.minimum.reduceat(x.astype(np.float64), starts)[owner]
    hi = np.maximum.reduceat(x.astype(np.float64), starts)[owner]
    step = (hi - lo) / top
    ulp = np.spacing((np.abs(hi) + np.abs(lo)).astype(dtype)).astype(np.float64)  # output rounding
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.where(step > 0, np.round((c - lo) / step), 0.0)
    assert level.min() >= 0 and level.max() <= top
    assert np.all(np.abs(c - (lo + (hi - lo) * (level / top))) <= 2 * ulp)
    err = np.abs(c.astype(np.float64) - x)
    assert np.all(err <= (step / 2 if rounding == "nearest" else step) + 2 * ulp)
    if rounding == "nearest":  # the extremes are grid points and come back exactly
        assert np.array_equal(np.minimum.reduceat(c, starts), np.minimum.reduceat(x, starts))
        assert np.array_equal(np.maximum.reduceat(c, starts), np.maximum.reduceat(x, starts))


def test_nearest_rounding_is_deterministic_and_needs_no_generator():
    op = make_compressor("uniform:bits=3,block=4")
    x = vector(50, np.float32)
    assert not op.unbiased and not op.randomised
    assert op.encode(x).buffer.tobytes() == op.encode(x).buffer.tobytes()
    assert op.delta(50) == pytest.approx(1 - 4 / 49) and op.omega(50) is None
    with pytest.raises(ValueError, match="randomised: pass rng"):
        make_compressor("uniform:bits=3,rounding=stochastic").encode(x)


def test_stochastic_rounding_is_unbiased_with_variance_within_omega():
    # 20000 draws of a 16-vector on a 2-bit grid (coarse, so most coordinates round)
    op = make_compressor("uniform:bits=2,rounding=stochastic")
    x = vector(16, np.float64, seed=9)
    rng = np.random.default_rng(0)
    draws = np.array([op(x, rng) for _ in range(20000)])
    mean, se = draws.mean(axis=0), draws.std(axis=0) / math.sqrt(len(draws))
    assert np.all(np.abs(mean - x) <= 5 * se + 1e-12)
    sq = np.sum((draws - x) ** 2, axis=1)
    assert sq.mean() <= op.omega(16) * (x @ x) + 5 * sq.std() / math.sqrt(len(sq))
    # each coordinate rounds between its two neighbours with probability = distance
    lo, hi = x.min(), x.max()
    step = (hi - lo) / 3
    t = (x - lo) / step
    up = np.mean(draws > lo + np.floor(t) * step + step / 2, axis=0)
    frac = t - np.floor(t)
    assert np.all(np.abs(up - frac) <= 5 * np.sqrt(frac * (1 - frac) / len(draws)) + 1e-12)


def test_the_grid_step_shrinks_by_half_per_bit():
    x = vector(4096, np.float64, seed=2)
    errs = [np.max(np.abs(make_compressor(f"uniform:bits={k}")(x) - x)) for k in (2, 4, 6, 8)]
    span = x.max() - x.min()
    for k, e in zip((2, 4, 6, 8), errs):
        assert span / (2**k - 1) / 2 * 0.9 < e <= span / (2**k - 1) / 2 * (1 + 1e-12)


@pytest.mark.parametrize("spec,match", [
    ("uniform:bits=0", "bits=0 must be an integer in 1..16"), ("uniform:bits=17", "1..16"),
    ("uniform:rounding=up", "choose one of nearest, stochastic"), ("uniform:block=-1", "block=-1")])
def test_bad_parameters_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        make_compressor(spec)


def test_corrupted_block_ends_are_refused():
    op = make_compressor("uniform:bits=4")
    good = op.encode(np.array([1.0, -2.0, 3.0], np.float32)).buffer
    with pytest.raises(DecodeError, match="truncated"):
        op.decode(good[:-1], 3, np.float32)
    buf = good.copy()
    buf[HEADER_BYTES:HEADER_BYTES + 8] = np.array([5.0, 1.0], "<f4").view(np.uint8)  # lo > hi
    with pytest.raises(DecodeError, match="lo ≤ hi"):
        op.decode(buf, 3, np.float32)


@pytest.mark.parametrize("kind", ["numba", "numpy"])
def test_constant_and_vanishing_ranges_send_the_block_minimum(kind):
    from mpicomp.compress import kernels

    if kind == "numba" and not kernels.HAVE_NUMBA:
        pytest.skip("needs numba")
    x = np.array([3.0, 3.0, 3.0, 1e-310, 2e-310, 3e-310, 0.0, 1.0], np.float64)
    with kernels.forced(kind):
        c = make_compressor("uniform:bits=16,block=3")(x)
    # block 1 constant; block 2's range overflows 65535/range: everything at its minimum
    np.testing.assert_array_equal(c, [3.0, 3.0, 3.0, 1e-310, 1e-310, 1e-310, 0.0, 1.0])
