"""Independent NumPy references of SPEC §1: the value C(x) each operator must produce, and its
exact information-bit count, written from the formulas rather than from the library code.

The only library pieces reused are the documented random words (`counter_rng`) and the wire
layout of transmitted norms (the first scalars of the body), so that the reference uses the
same random draws and the same transmitted ν as the operator.
"""

from __future__ import annotations

import math

import numpy as np

from mpicomp.compress.base import HEADER_BYTES
from mpicomp.compress.counter_rng import draw_key, words32, words64


def blocks(d, block):
    b = d if block <= 0 else block
    return [(lo, min(lo + b, d)) for lo in range(0, d, max(b, 1))]


def sent_scalars(payload, count, dtype, extra=0):
    start = HEADER_BYTES + extra
    stop = start + count * np.dtype(dtype).itemsize
    return payload.buffer[start:stop].view(dtype).astype(np.float64)


def key_of(seed):
    return draw_key(np.random.default_rng(seed))


def dither_value(x, payload, p, s, block, seed, extra=0):
    """ν·sign(x)·⌊s|x|/ν + u⌋/s with ν the transmitted block norm."""
    d = x.size
    bl = blocks(d, block)
    nu = sent_scalars(payload, len(bl), x.dtype, extra)
    norm = {1: 1, 2: 2, math.inf: np.inf}[p]
    u = words32(key_of(seed), d) * 2.0**-32
    out = np.zeros(d)
    for (lo, hi), v in zip(bl, nu):
        xb = x[lo:hi].astype(np.float64)
        assert v >= np.linalg.norm(xb, norm) * (1 - 1e-6)
        if v == 0:
            continue
        lev = np.minimum(np.floor(s * np.abs(xb) / v + u[lo:hi]), s)
        out[lo:hi] = v * np.sign(xb) * lev / s
    return out


def natural_value(x, seed):
    """Stochastic rounding of |t| = (1 + M/2^m)·2^E to 2^E or 2^(E+1), P(up) = M/2^m."""
    t = x.astype(np.float64)
    mbits = 23 if x.dtype == np.float32 else 52
    mags = np.abs(t)
    lo = np.zeros_like(mags)
    nz = mags > 0
    tiny = np.finfo(x.dtype).tiny
    lo[nz] = np.where(mags[nz] >= tiny, 2.0 ** np.floor(np.log2(mags[nz])), 0.0)
    # np.log2 can round a value just below a power of two up to it: fix those
    over = lo > mags
    lo[over] /= 2
    step = np.where(lo > 0, lo, tiny)  # subnormals round between 0 and the smallest normal
    prob = (mags - lo) / step
    if x.dtype == np.float32:
        u = (words32(key_of(seed), x.size) >> np.uint32(9)).astype(np.float64) * 2.0**-mbits
    else:
        u = (words64(key_of(seed), x.size) >> np.uint64(12)).astype(np.float64) * 2.0**-mbits
    return np.sign(t) * np.where(u < prob, lo + step, lo)


def natural_dither_value(x, payload, p, s, block, seed):
    d = x.size
    bl = blocks(d, block)
    nu = sent_scalars(payload, len(bl), x.dtype)
    u = words32(key_of(seed), d) * 2.0**-32
    out = np.zeros(d)
    grid = np.concatenate([[0.0], 2.0 ** np.arange(1 - s, 1)])
    for (lo, hi), v in zip(bl, nu):
        if v == 0:
            continue
        y = np.minimum(np.abs(x[lo:hi].astype(np.float64)) / v, 1.0)
        upper = np.searchsorted(grid, y, side="left")  # first level ≥ y
        upper = np.maximum(upper, 1)
        hi_lv, lo_lv = grid[upper], grid[upper - 1]
        prob = np.where(hi_lv > lo_lv, (y - lo_lv) / (hi_lv - lo_lv), 0.0)
        exact = grid[upper] == y
        val = np.where(exact, y, np.where(u[lo:hi] < prob, hi_lv, lo_lv))
        out[lo:hi] = np.sign(x[lo:hi]) * val * v
    return out


def topk_indices(x, k):
    order = np.argsort(-np.abs(x.astype(np.float64)), kind="stable")
    return np.sort(order[:k])


def index_bits(k, d):
    return min(k * max(1, math.ceil(math.log2(d))) if d > 1 else k, d)
