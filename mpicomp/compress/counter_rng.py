"""Counter-based random words: the random draws of every stochastic operator.

Each `encode` call takes one 64-bit key from the caller's ``numpy.random.Generator`` and derives
the word for coordinate ``j`` as a pure function of ``(key, j)`` (the SplitMix64 output
function). The NumPy fallback, the Numba kernels and a GPU kernel therefore draw exactly the
same numbers, so their buffers are identical byte for byte, and no pass over the data is spent
generating a random array first.

``words32(key, n)[j]`` is the low (j even) or high (j odd) half of ``splitmix64(key, j >> 1)``;
a uniform on [0, 1) is ``word * 2**-32``.

References
----------
G. Steele, D. Lea, C. Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014.
"""

from __future__ import annotations

import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
INV_2_32 = 2.0**-32


def draw_key(rng: np.random.Generator) -> int:
    """One 64-bit key from the caller's generator (advances it by one draw)."""
    return int(rng.integers(0, 2**64, dtype=np.uint64))


def splitmix64(key: int, counters: np.ndarray) -> np.ndarray:
    """SplitMix64 output for ``counters`` (uint64 array) under ``key``; arithmetic wraps mod 2⁶⁴."""
    z = (counters + np.uint64(1)) * GAMMA + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def words64(key: int, n: int, start: int = 0) -> np.ndarray:
    """``n`` 64-bit words for coordinates ``start … start + n − 1``."""
    return splitmix64(key, np.arange(start, start + n, dtype=np.uint64))


def words32(key: int, n: int) -> np.ndarray:
    """``n`` 32-bit words: the low then high halves of ``words64(key, ceil(n / 2))``."""
    h = words64(key, (n + 1) // 2)
    out = np.empty(2 * h.size, dtype=np.uint32)
    out[0::2] = h & np.uint64(0xFFFFFFFF)
    out[1::2] = h >> np.uint64(32)
    return out[:n]


def uniforms(key: int, n: int) -> np.ndarray:
    """``n`` float64 uniforms on [0, 1) with 2⁻³² resolution (``words32 · 2⁻³²``)."""
    return words32(key, n) * INV_2_32
