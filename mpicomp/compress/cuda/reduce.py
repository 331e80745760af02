"""Per-block reductions on the device (norms, extremes, standard deviations), the rounding of
block scalars to the payload dtype, and the scalar device helpers the level kernels share.

A vector of ``d`` values is cut into blocks of ``block`` values (the last one shorter); every
result has one float64 value per block. A block of at most `SEQUENTIAL_MAX` values is reduced
by one thread, in index order. A longer one is cut into parts of `CHUNK` values, one CUDA block
each: every thread folds a strided share of the part, then the CUDA block folds its threads'
results in a shared-memory tree; when a block has several parts, the next pass reduces the
parts' results the same way. Sums run in float64 in that order, so they may differ from the
CPU's (`numba_kernels.norms`, ``np.std``) in the last bits; maxima and minima are exact.

Sums use `bits.add_rn`/`bits.mul_rn`, which round each operation on its own (see `bits`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int64, uint32

from . import THREADS, launch, launch_blocks
from .bits import float32_bits, float32_from_bits

#: the longest block one thread reduces (in index order); longer blocks take a CUDA block a part
SEQUENTIAL_MAX = 32
#: values one CUDA block reduces in one pass (read when a reduction starts)
CHUNK = 16 * THREADS

# what a reduction folds: the term of value v (after clipping, when asked) and the fold
ABS, SQUARE, VALUE, DEVIATION = 0, 1, 2, 3
SUM, MAX = False, True
#: index of an empty candidate of `block_extremes` (loses every tie)
NO_INDEX = np.iinfo(np.int64).max


@cuda.jit(device=True, inline=True)
def clipped(v, bound, bound_cast):
    """``v`` clipped to ``±bound`` as ``np.clip(x, -bound, bound).astype(x.dtype)`` gives it:
    ``v`` inside the bounds, else ``±bound_cast`` (the bound rounded to the dtype)."""
    if v > bound:
        return bound_cast
    if v < -bound:
        return -bound_cast
    return v


@cuda.jit(device=True, inline=True)
def _term(src, j, b, mode, clipping, center, bound, bound_cast):
    """What a reduction folds for ``src[j]`` (block ``b``)."""
    v = float64(src[j])
    if clipping:
        v = clipped(v, bound[b], float64(bound_cast[b]))
    if mode == ABS:
        return abs(v)
    if mode == SQUARE:
        return v * v
    if mode == DEVIATION:
        e = v - center[b]
        return e * e
    return v


@cuda.jit(device=True, inline=True)
def _fold(acc, t, use_max):
    """``max(acc, t)`` (first kept on ties) or ``acc + t``."""
    if use_max:
        return t if t > acc else acc
    return acc + t


# --- sums and maxima ---------------------------------------------------------------------------
@cuda.jit(cache=True)
def _reduce_sequential(src, block, mode, use_max, clipping, center, bound, bound_cast, out):
    """``out[b]`` = the fold of block ``b``'s terms, one thread a block, in index order."""
    b = cuda.grid(1)
    if b < out.size:
        stop = min(b * block + block, src.size)
        acc = 0.0
        for j in range(b * block, stop):
            acc = _fold(acc, _term(src, j, b, mode, clipping, center, bound, bound_cast), use_max)
        out[b] = acc


@cuda.jit(cache=True)
def _reduce_tree(src, block, chunk, parts, mode, use_max, clipping, center, bound, bound_cast,
                 out):
    """``out[g]`` = the fold of part ``g % parts`` (``chunk`` values) of block ``g // parts``:
    strided per thread, then a shared-memory tree over the CUDA block's threads."""
    shared = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    g = cuda.blockIdx.x
    b = g // parts
    start = b * block + (g - b * parts) * chunk
    stop = min(start + chunk, min(b * block + block, src.size))
    acc = 0.0
    for j in range(start + t, stop, cuda.blockDim.x):
        acc = _fold(acc, _term(src, j, b, mode, clipping, center, bound, bound_cast), use_max)
    shared[t] = acc
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            shared[t] = _fold(shared[t], shared[t + half], use_max)
        cuda.syncthreads()
        half //= 2
    if t == 0:
        out[g] = shared[0]


@cuda.jit(cache=True)
def _per_count(values, block, d, root):
    """``values[b] /= (values in block b)``, then the square root when ``root``."""
    b = cuda.grid(1)
    if b < values.size:
        v = values[b] / float64(min(block, d - b * block))
        values[b] = math.sqrt(v) if root else v


@cuda.jit(cache=True)
def _sqrt(values):
    """``values[b] = √values[b]``."""
    b = cuda.grid(1)
    if b < values.size:
        values[b] = math.sqrt(values[b])




def _threads_for(span: int) -> int:
    """Threads of a tree's CUDA block for parts of ``span`` values: the power of two ≥ span,
    at most `THREADS`."""
    return min(THREADS, 1 << max(0, span - 1).bit_length())


def _reduce(src, block: int, mode: int, use_max: bool, xp, clip=None, center=None):
    """The fold (`SUM` or `MAX`) of the terms ``mode`` of each block of ``src``: float64."""
    nb = -(-src.size // block)
    if block <= SEQUENTIAL_MAX:
        out = xp.empty(nb, dtype=xp.float64)
        bound, bound_cast = (out, src) if clip is None else clip  # unread without a clip
        launch(_reduce_sequential, nb, src, block, mode, use_max, clip is not None,
               out if center is None else center, bound, bound_cast, out)
        return out
    chunk = CHUNK
    parts = -(-block // chunk)
    out = xp.empty(nb * parts, dtype=xp.float64)
    bound, bound_cast = (out, src) if clip is None else clip  # unread without a clip
    launch_blocks(_reduce_tree, nb * parts, _threads_for(min(block, chunk)), src, block, chunk,
                   parts, mode, use_max, clip is not None, out if center is None else center,
                   bound, bound_cast, out)
    if parts == 1:
        return out
    return _reduce(out, parts, VALUE, use_max, xp)


def block_norms(x, block: int, p: float, xp, clip=None):
    """‖x_B‖_p of each block of ``block`` values of the device vector ``x``, p ∈ {1, 2, inf}.

    Parameters
    ----------
    x : device array
        Flat float32/float64 vector.
    block : int
        Effective block length (≥ 1; ``x.size`` for one block).
    p : {1, 2, inf}
    xp : module
        Namespace of ``x`` (CuPy; NumPy under the simulator).
    clip : tuple of device arrays, optional
        ``(bound, bound_cast)`` per block: the norms of ``x`` clipped to ``±bound`` in its own
        dtype (`clipped`; TernGrad), without materialising the clipped vector.

    Returns
    -------
    device float64 array
        One norm a block, accumulated in float64 (maxima exact).
    """
    if math.isinf(p):
        return _reduce(x, block, ABS, MAX, xp, clip)
    if p == 2:
        out = _reduce(x, block, SQUARE, SUM, xp, clip)
        launch(_sqrt, out.size, out)
        return out
    if p == 1:
        return _reduce(x, block, ABS, SUM, xp, clip)
    raise ValueError(f"unknown norm p={p!r}: choose one of 1, 2, inf")


def block_std(x, block: int, xp):
    """Standard deviation of each block, as ``np.std(x_B, dtype=np.float64)``: the mean
    ``Σx/n``, then ``√(Σ(x − mean)²/n)``, both sums in float64."""
    mean = _reduce(x, block, VALUE, SUM, xp)
    launch(_per_count, mean.size, mean, block, x.size, False)
    out = _reduce(x, block, DEVIATION, SUM, xp, center=mean)
    launch(_per_count, out.size, out, block, x.size, True)
    return out


# --- extremes ----------------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def _candidate(x, from_x, lo, lo_at, hi, hi_at, j):
    """(lowest, its index, highest, its index) of candidate ``j``: ``x[j]`` itself, or the
    result of an earlier pass."""
    if from_x:
        v = float64(x[j])
        return v, int64(j), v, int64(j)
    return lo[j], lo_at[j], hi[j], hi_at[j]


@cuda.jit(device=True, inline=True)
def _beats(w, k, v, i, lower):
    """Whether ``(w, k)`` replaces the running extreme ``(v, i)``: strictly lower (higher when
    not ``lower``), or equal at an earlier index — the first of equal values wins, as in the
    CPU's in-order scan (it decides the sign of a zero extreme)."""
    if lower:
        return w < v or (w == v and k < i)
    return w > v or (w == v and k < i)


@cuda.jit(device=True, inline=True)
def _scan_extremes(x, from_x, lo, lo_at, hi, hi_at, start, stop, step, low, low_at, high,
                   high_at):
    """The running extremes ``(low, low_at, high, high_at)`` folded over candidates
    ``start, start + step, … < stop``."""
    for j in range(start, stop, step):
        v, i, w, k = _candidate(x, from_x, lo, lo_at, hi, hi_at, j)
        if _beats(v, i, low, low_at, True):
            low, low_at = v, i
        if _beats(w, k, high, high_at, False):
            high, high_at = w, k
    return low, low_at, high, high_at


@cuda.jit(cache=True)
def _extremes_sequential(x, from_x, lo, lo_at, hi, hi_at, n, block, out_lo, out_lo_at, out_hi,
                         out_hi_at):
    """Per block of ``block`` candidates (of ``n``): the lowest and highest, one thread a block,
    in index order."""
    b = cuda.grid(1)
    if b < out_lo.size:
        first = b * block
        low, low_at, high, high_at = _candidate(x, from_x, lo, lo_at, hi, hi_at, first)
        low, low_at, high, high_at = _scan_extremes(x, from_x, lo, lo_at, hi, hi_at, first + 1,
                                                    min(first + block, n), 1, low, low_at, high,
                                                    high_at)
        out_lo[b], out_lo_at[b], out_hi[b], out_hi_at[b] = low, low_at, high, high_at


@cuda.jit(cache=True)
def _extremes_tree(x, from_x, lo, lo_at, hi, hi_at, n, block, chunk, parts, out_lo, out_lo_at,
                   out_hi, out_hi_at):
    """The lowest and highest candidate of part ``g % parts`` of block ``g // parts`` into
    ``out_*[g]``: strided per thread, then a shared-memory tree."""
    low_s = cuda.shared.array(THREADS, float64)
    low_at_s = cuda.shared.array(THREADS, int64)
    high_s = cuda.shared.array(THREADS, float64)
    high_at_s = cuda.shared.array(THREADS, int64)
    t = cuda.threadIdx.x
    g = cuda.blockIdx.x
    b = g // parts
    start = b * block + (g - b * parts) * chunk
    stop = min(start + chunk, min(b * block + block, n))
    low, low_at, high, high_at = _scan_extremes(x, from_x, lo, lo_at, hi, hi_at, start + t,
                                                stop, cuda.blockDim.x, math.inf,
                                                int64(NO_INDEX), -math.inf, int64(NO_INDEX))
    low_s[t], low_at_s[t], high_s[t], high_at_s[t] = low, low_at, high, high_at
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            if _beats(low_s[t + half], low_at_s[t + half], low_s[t], low_at_s[t], True):
                low_s[t], low_at_s[t] = low_s[t + half], low_at_s[t + half]
            if _beats(high_s[t + half], high_at_s[t + half], high_s[t], high_at_s[t], False):
                high_s[t], high_at_s[t] = high_s[t + half], high_at_s[t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        out_lo[g], out_lo_at[g], out_hi[g], out_hi_at[g] = (low_s[0], low_at_s[0], high_s[0],
                                                            high_at_s[0])


def _extremes_pass(x, from_x, candidates, n, block, out, xp) -> None:
    """One pass of `block_extremes` over ``n`` candidates into ``out`` (recursing on the
    results of the parts)."""
    nb = out[0].size
    if block <= SEQUENTIAL_MAX:
        launch(_extremes_sequential, nb, x, from_x, *candidates, n, block, *out)
        return
    chunk = CHUNK
    parts = -(-block // chunk)
    partial = out if parts == 1 else (xp.empty(nb * parts, dtype=xp.float64),
                                      xp.empty(nb * parts, dtype=xp.int64),
                                      xp.empty(nb * parts, dtype=xp.float64),
                                      xp.empty(nb * parts, dtype=xp.int64))
    launch_blocks(_extremes_tree, nb * parts, _threads_for(min(block, chunk)), x, from_x,
                   *candidates, n, block, chunk, parts, *partial)
    if parts > 1:
        _extremes_pass(x, False, partial, nb * parts, parts, out, xp)


def block_extremes(x, block: int, xp):
    """(lo, hi): the minimum and maximum of each block of the device vector ``x``, float64, as
    the CPU's in-order scan finds them (`numba_kernels.block_extremes`; of equal values the
    first, which decides the sign of a zero)."""
    nb = -(-x.size // block)
    out = (xp.empty(nb, dtype=xp.float64), xp.empty(nb, dtype=xp.int64),
           xp.empty(nb, dtype=xp.float64), xp.empty(nb, dtype=xp.int64))
    if nb:
        _extremes_pass(x, True, out, x.size, block, out, xp)  # the candidates are x itself
    return out[0], out[2]


# --- block scalars in the payload dtype --------------------------------------------------------
@cuda.jit(cache=True)
def _round_up(values, out):
    """``out[i]`` = float64 ``values[i]`` cast to ``out``'s dtype, the next value up where the
    cast rounded down (only float32 can); above the dtype's range: inf."""
    i = cuda.grid(1)
    if i < out.size:
        v = values[i]
        out[i] = v
        c = float64(out[i])
        if c < v:  # a float32 below v: step one unit in the last place towards +inf
            bits = float32_bits(c)
            out[i] = float32_from_bits(bits + uint32(1) if c >= 0 else bits - uint32(1))


def round_up(values, dtype, xp):
    """float64 block scalars (norms) as sent in ``dtype``: cast, rounded up where the cast
    lost (`blockwise.round_up`); a value above the dtype's range becomes inf, which the encode
    kernels report as ``REJECTED`` (the CPU raises ValueError there)."""
    out = xp.empty(values.size, dtype=dtype)
    launch(_round_up, values.size, values, out)
    return out


@cuda.jit(cache=True)
def _clip_bounds(sigma, clip, bound, bound_cast):
    """``bound = clip·σ`` per block, and the bound cast to the payload dtype."""
    b = cuda.grid(1)
    if b < bound.size:
        bound[b] = clip * sigma[b]
        bound_cast[b] = bound[b]


def clip_bounds(x, block: int, clip: float, xp):
    """(bound, bound_cast) of TernGrad's clipping: ``clip·σ_B`` in float64 (`block_std`) and
    that bound cast to ``x``'s dtype (the value a clipped coordinate takes)."""
    sigma = block_std(x, block, xp)
    bound = xp.empty(sigma.size, dtype=xp.float64)
    bound_cast = xp.empty(sigma.size, dtype=x.dtype)
    launch(_clip_bounds, sigma.size, sigma, float(clip), bound, bound_cast)
    return bound, bound_cast
