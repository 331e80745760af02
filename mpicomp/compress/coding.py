"""Entropy codes of integer level vectors: QSGD's Elias stream and the vector source coder.

Both write bits MSB first into a zero-filled ``uint8`` stream at a running bit position (stream
bit ``p`` is bit ``p % 8`` of byte ``p // 8``, as everywhere in the wire format), and both are
Numba kernels when Numba is installed (`jit.njit`), plain Python otherwise.

**Elias stream** (SPEC §1.2, ``coder=elias``): for each non-zero level, the Elias-γ code of the
gap since the previous one, a sign bit and γ(level).

**Vector source coder** (SPEC §3.4, ``coder=golomb``) of a vector of symbols ``0 … S−1``
(symbol 0 the zero level, ``2(ℓ−1) + 1`` the level +ℓ and ``2(ℓ−1) + 2`` the level −ℓ):

1. the count ``c_k`` of every symbol ``k ≥ 1`` as γ(c_k + 1) (the zeros' count is what is left);
2. the symbols in the order of increasing count (ties: lower symbol first); each but the last
   codes its positions among the positions not yet coded: the runs of other symbols before each
   of its ``c`` occurrences among the ``m`` remaining positions, Golomb-coded with parameter
   ``b = max(1, ⌈ln 2 · (m − c)/c⌉)`` (the Gallager–van Voorhis choice for geometric runs with
   hit rate ``c/m``; integer and float arithmetic only, so encoder and decoder agree everywhere);
   the run after the last occurrence is not sent;
3. the most frequent symbol fills the positions left: it costs nothing beyond its count.

Golomb code of a run ``g``: ``q = ⌊g/b⌋`` one-bits and a zero-bit, then ``r = g − qb`` in
truncated binary (``k = ⌈log₂ b⌉``, ``u = 2^k − b``: ``r < u`` in ``k − 1`` bits, else ``r + u``
in ``k`` bits; nothing for ``b = 1``). The length is exact and data dependent: by the chain
rule it is close to ``d·Ĥ`` (Ĥ the empirical entropy of the symbols), and it falls with the
share of zeros. Because the symbol being coded is never the most frequent of those left,
``c ≤ m/2``, so the runs cost at most ``1/ln 2`` unary bits per occurrence and the whole
stream is below ``d·(3 + ⌈log₂(d+1)⌉)`` bits plus the counts (`golomb_max_bits`).

**Decoding untrusted bytes.** The decoders run compiled without bounds checks, so each bounds
what it reads before using it and returns −1 (the callers raise `DecodeError`): a γ code has at
most 62 leading zeros (its value fits an int64), a gap is compared with the positions left
(``gap ≤ d − 1 − prev``, no sum that could wrap), a level with ``s``, a count with the positions
not yet counted, and a Golomb run with the positions its turn has left (the unary part stops
there). No count read from the stream sizes an allocation: a decode allocates ``O(d)``.

References
----------
Golomb, "Run-length encodings", IEEE Trans. Inf. Theory 12(3), 1966. Gallager, van Voorhis,
"Optimal source codes for geometrically distributed integer alphabets", IEEE Trans. Inf. Theory
21(2), 1975. Woldemariam, Liu, Scaglione, "Low-complexity vector source coding for discrete long
sequences with unknown distributions", 2023; Campbell, Liu, Woldemariam, Scaglione,
"Malcom-PSGD", 2023 (the coder of SPEC §3.4).
"""

from __future__ import annotations

import math

import numpy as np

from .jit import CHUNK, njit, unpack_chunk

LN2 = math.log(2.0)


# --- Elias-γ ---------------------------------------------------------------------------------
@njit
def write_gamma(out, pos, n):
    """Write γ(n) MSB first at stream bit ``pos`` (``out`` zero-filled); return the new pos."""
    nb = 0
    while (n >> nb) > 1:
        nb += 1
    pos += nb  # nb leading zeros
    for k in range(nb, -1, -1):
        if (n >> k) & 1:
            out[pos >> 3] |= np.uint8(1 << (pos & 7))
        pos += 1
    return pos


#: most leading zeros of a γ code a decoder accepts: its value then stays below 2^63 (an int64)
GAMMA_MAX_ZEROS = 62
#: upper bound of every run a well-formed stream holds (d < 2^32); the default of `read_golomb`
MAX_RUN = 2**62


@njit
def read_gamma(buf, pos, limit):
    """Read one γ code at ``pos``; return (value, new pos), or (0, −1) if it runs past ``limit``
    or has more than `GAMMA_MAX_ZEROS` leading zeros.

    The value is at most 2^63 − 1, so it fits an int64 but not a sum with a position: callers
    compare it with the room they have (``gap > d − 1 − prev``) before adding it to anything.
    """
    nb = 0
    while pos < limit and ((buf[pos >> 3] >> (pos & 7)) & 1) == 0:  # at most limit − pos steps
        nb += 1
        pos += 1
    if nb > GAMMA_MAX_ZEROS or pos + nb >= limit:
        return 0, -1
    n = 0
    for _ in range(nb + 1):
        n = (n << 1) | int((buf[pos >> 3] >> (pos & 7)) & 1)
        pos += 1
    return n, pos


@njit
def elias_from_fields(buf, d, width, out):
    """QSGD's Elias stream of packed signed-level fields: per non-zero level γ(gap), its sign
    bit and γ(level).

    ``out`` must be zero-filled and large enough (``level_coders.EliasCoder.max_bits``);
    returns (bits written, non-zero count). Encoder side: the fields come from a level kernel
    (``dither_levels``, levels ≤ s), positions are ``j < d`` by construction and each code
    fits the bound that sizes ``out``, so nothing here depends on received bytes.
    """
    fields = np.empty(CHUNK, dtype=np.uint32)
    mask = (np.uint32(1) << np.uint32(width - 1)) - np.uint32(1)
    pos = 0
    prev = -1
    nnz = 0
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        unpack_chunk(buf, c0 * width, n, width, fields)
        for i in range(n):
            f = fields[i]
            lev = f & mask
            if lev != 0:
                j = c0 + i
                pos = write_gamma(out, pos, j - prev)
                if f >> np.uint32(width - 1):
                    out[pos >> 3] |= np.uint8(1 << (pos & 7))
                pos += 1
                pos = write_gamma(out, pos, np.int64(lev))
                prev = j
                nnz += 1
    return pos, nnz


@njit
def elias_decode_values(buf, nnz, limit, s, factor, norm, block, out):
    """Decode ``nnz`` Elias entries straight into values ±factor[level]·norm[block] (``out``
    zeroed first); return the bits read, or −1 if the stream is truncated or malformed.

    Every read is bounded before use: ``nnz ≤ d`` and ``3·nnz ≤ limit`` (an entry takes at
    least 3 bits), each position ``prev + gap < d`` (compared as ``gap ≤ d − 1 − prev``, which
    cannot overflow), the sign bit inside ``limit`` and each level in ``1 … s``.
    """
    d = out.size
    out[:] = 0
    if nnz < 0 or nnz > d or 3 * nnz > limit:
        return -1
    pos = 0
    prev = -1
    for _ in range(nnz):
        gap, pos = read_gamma(buf, pos, limit)
        if pos < 0 or pos >= limit or gap > d - 1 - prev:
            return -1
        j = prev + gap
        negative = (buf[pos >> 3] >> (pos & 7)) & 1
        pos += 1
        lev, pos = read_gamma(buf, pos, limit)
        if pos < 0 or lev > s:
            return -1
        val = factor[lev] * norm[j // block]
        out[j] = -val if negative else val
        prev = j
    return pos


# --- vector source coder (counts, then Golomb-coded runs per symbol) ---------------------------
@njit
def golomb_parameter(m, c):
    """Golomb parameter for ``c`` occurrences among ``m`` positions: ``max(1, ⌈ln2·(m−c)/c⌉)``."""
    b = int(math.ceil((m - c) * LN2 / c))
    return b if b > 1 else 1


@njit
def _ceil_log2(b):
    k = 0
    while k < 62 and (1 << k) < b:  # b ≤ d < 2^32 for a consistent stream
        k += 1
    return k


@njit
def write_golomb(out, pos, g, b):
    """Write the Golomb code of ``g`` at stream bit ``pos`` (``out`` zero-filled); new pos."""
    q = g // b
    for _ in range(q):
        out[pos >> 3] |= np.uint8(1 << (pos & 7))
        pos += 1
    pos += 1  # the terminating zero
    if b == 1:
        return pos
    k = _ceil_log2(b)
    u = (1 << k) - b
    r = g - q * b
    n = k - 1
    if r >= u:
        r += u
        n = k
    for t in range(n - 1, -1, -1):
        if (r >> t) & 1:
            out[pos >> 3] |= np.uint8(1 << (pos & 7))
        pos += 1
    return pos


@njit
def read_golomb(buf, pos, limit, b, most=MAX_RUN):
    """Read one Golomb code at ``pos``; return (run, new pos), or (0, −1) if it runs past
    ``limit`` or the run exceeds ``most`` (the positions a decoder has room for).

    The unary part stops as soon as ``q·b`` would pass ``most``, so a long run of one bits
    costs no more than the room it claims and ``q·b + r`` never overflows.
    """
    if most < 0:
        return 0, -1
    qmax = most // b
    q = 0
    while pos < limit and (buf[pos >> 3] >> (pos & 7)) & 1:
        q += 1
        pos += 1
        if q > qmax:
            return 0, -1
    if pos >= limit:
        return 0, -1
    pos += 1
    if b == 1:
        return q, pos
    k = _ceil_log2(b)
    u = (1 << k) - b
    if pos + k - 1 > limit:
        return 0, -1
    v = 0
    for _ in range(k - 1):
        v = (v << 1) | int((buf[pos >> 3] >> (pos & 7)) & 1)
        pos += 1
    if v >= u:
        if pos >= limit:
            return 0, -1
        v = ((v << 1) | int((buf[pos >> 3] >> (pos & 7)) & 1)) - u
        pos += 1
    g = q * b + v
    if g > most:
        return 0, -1
    return g, pos


@njit
def _coding_order(counts):
    """Symbols by increasing count, ties by symbol (the order both ends derive from the counts)."""
    return np.argsort(counts, kind="mergesort")


@njit
def _runs_by_turns(sym, turn, start, runs):
    """Runs of every coded turn in one pass: a position of turn ``r`` is among the positions
    left at every turn ``t ≤ r``, so the run before a hit of turn ``t`` is the number of
    positions of turns ``≥ t`` since its previous hit (``O(d + L·h)``)."""
    n_symbols = turn.size
    filled = start[:n_symbols].copy()
    seen = np.zeros(n_symbols, dtype=np.int64)  # positions so far of each turn
    after_hit = np.zeros(n_symbols, dtype=np.int64)  # positions of turns ≥ t up to t's last hit
    for j in range(sym.size):
        r = turn[sym[j]]
        if r < n_symbols - 1:
            left = 0
            for u in range(r, n_symbols):
                left += seen[u]
            runs[filled[r]] = left - after_hit[r]
            filled[r] += 1
            after_hit[r] = left + 1
        seen[r] += 1


@njit
def _runs_by_scan(sym, order, start, runs):
    """Runs of every coded turn by scanning the positions left, compacted after each turn
    (``O(Σ_t m_t)``)."""
    d = sym.size
    alive = np.arange(d)
    m = d
    for t in range(order.size - 1):
        if start[t + 1] == start[t]:
            continue
        k = order[t]
        filled = start[t]
        run = 0
        kept = 0
        for i in range(m):
            p = alive[i]
            if sym[p] == k:
                runs[filled] = run
                filled += 1
                run = 0
            else:
                alive[kept] = p
                kept += 1
                run += 1
        m = kept


@njit
def _scan_cost(counts, order):
    """Positions the scanning passes visit: Σ over coded turns of the positions left."""
    cost = 0
    m = counts.sum()
    for t in range(order.size - 1):
        c = counts[order[t]]
        if c:
            cost += m
            m -= c
    return cost


@njit
def golomb_encode(sym, n_symbols, out):
    """Write the vector source code of ``sym`` (ints in ``0 … n_symbols−1``) into the
    zero-filled ``out`` (at least `golomb_max_bits` bits); return the bits written. The runs
    come from whichever of `_runs_by_turns` and `_runs_by_scan` visits fewer positions."""
    d = sym.size
    counts = np.zeros(n_symbols, dtype=np.int64)
    for j in range(d):
        counts[sym[j]] += 1
    pos = 0
    for k in range(1, n_symbols):
        pos = write_gamma(out, pos, counts[k] + 1)
    order = _coding_order(counts)
    turn = np.empty(n_symbols, dtype=np.int64)
    start = np.zeros(n_symbols + 1, dtype=np.int64)
    by_turns = d
    for t in range(n_symbols):
        turn[order[t]] = t
        c = counts[order[t]] if t < n_symbols - 1 else 0
        start[t + 1] = start[t] + c
        by_turns += c * (n_symbols - t)
    runs = np.empty(start[n_symbols], dtype=np.int64)
    if by_turns <= _scan_cost(counts, order):
        _runs_by_turns(sym, turn, start, runs)
    else:
        _runs_by_scan(sym, order, start, runs)
    m = d
    for t in range(n_symbols - 1):
        c = counts[order[t]]
        if c == 0:
            continue
        b = golomb_parameter(m, c)
        for i in range(start[t], start[t + 1]):
            pos = write_golomb(out, pos, runs[i], b)
        m -= c
    return pos


@njit
def _run_room(m, c, h, first):
    """Longest run before hit ``h`` of ``c`` among ``m`` positions when ``first`` is the rank of
    the first position it may take: the ``c − h − 1`` later hits still need a position each."""
    return m - first - (c - h)


@njit
def _place_by_tree(buf, pos, limit, counts, order, sym):
    """Read the runs and place each coded turn's symbol; the positions left are kept in a
    Fenwick tree of alive flags, so the ``k``-th one is found in ``O(log d)``.

    ``counts`` must sum to ``sym.size`` (`golomb_decode` checks it). Each run is read with the
    room the turn has left (`_run_room`), so every rank stays below ``m`` and every tree
    search ends inside the tree.
    """
    d = sym.size
    tree = np.empty(d + 1, dtype=np.int64)  # all positions alive: tree[i] = i & −i
    for i in range(1, d + 1):
        tree[i] = i & -i
    top = 1
    while top * 2 <= d:
        top *= 2
    m = d
    for t in range(order.size - 1):
        k = order[t]
        c = counts[k]
        if c == 0:
            continue
        b = golomb_parameter(m, c)
        rank = -1  # rank of the hit among the positions left at this turn
        for h in range(c):
            g, pos = read_golomb(buf, pos, limit, b, _run_room(m, c, h, rank + 1))
            if pos < 0:
                return -1
            rank += g + 1
            want = rank - h + 1  # its rank among those left now (the h earlier hits are gone)
            p = 0
            step = top
            while step > 0:
                if p + step <= d and tree[p + step] < want:
                    p += step
                    want -= tree[p]
                step //= 2
            sym[p] = k  # p is 0-based: the tree's index p + 1
            i = p + 1
            while i <= d:
                tree[i] -= 1
                i += i & -i
        m -= c
    return pos


@njit
def _place_by_scan(buf, pos, limit, counts, order, sym):
    """Read the runs and place each coded turn's symbol by scanning the positions left,
    compacted after each turn (runs bounded as in `_place_by_tree`)."""
    d = sym.size
    alive = np.arange(d)
    m = d
    for t in range(order.size - 1):
        k = order[t]
        c = counts[k]
        if c == 0:
            continue
        b = golomb_parameter(m, c)
        i = 0
        kept = 0
        for h in range(c):
            g, pos = read_golomb(buf, pos, limit, b, _run_room(m, c, h, i))
            if pos < 0:
                return -1
            for _ in range(g):
                alive[kept] = alive[i]
                kept += 1
                i += 1
            sym[alive[i]] = k
            i += 1
        for r in range(i, m):
            alive[kept] = alive[r]
            kept += 1
        m = kept
    return pos


@njit
def golomb_decode(buf, limit, n_symbols, sym):
    """Read a vector source code of ``sym.size`` symbols from ``buf`` (``limit`` bits) into
    ``sym``; return the bits read, or −1 if the stream is truncated or malformed. The
    positions come from whichever of `_place_by_tree` and `_place_by_scan` is cheaper.

    Each count is checked against the positions not yet counted before it is added, so the
    counts sum to ``d`` exactly and every Golomb parameter is derived from ``c ≤ m ≤ d``.
    Memory: ``sym`` plus one int64 array of ``d + 1`` entries (tree or scan list)."""
    d = sym.size
    counts = np.zeros(n_symbols, dtype=np.int64)
    pos = 0
    total = 0
    for k in range(1, n_symbols):
        v, pos = read_gamma(buf, pos, limit)
        if pos < 0:
            return -1
        if v - 1 > d - total:  # more symbols than positions (checked before adding: no overflow)
            return -1
        counts[k] = v - 1
        total += v - 1
    counts[0] = d - total
    order = _coding_order(counts)
    sym[:] = order[n_symbols - 1]
    coded = d - counts[order[n_symbols - 1]]
    depth = 1
    while (1 << depth) <= d:
        depth += 1
    if d + 4 * coded * depth <= _scan_cost(counts, order):
        return _place_by_tree(buf, pos, limit, counts, order, sym)
    return _place_by_scan(buf, pos, limit, counts, order, sym)


def golomb_max_bits(d: int, n_symbols: int) -> int:
    """Upper bound of `golomb_encode`'s length for ``d`` symbols (see the module notes)."""
    width = math.ceil(math.log2(d + 1)) if d else 0
    return (n_symbols - 1) * (2 * int(d + 1).bit_length() - 1) + d * (3 + width)


@njit
def symbols_from_fields(buf, d, width, sym):
    """Symbols of ``d`` packed signed-level fields (level, then the sign bit): 0 for level 0,
    ``2ℓ − 1`` for +ℓ, ``2ℓ`` for −ℓ. Encoder side: the fields come from a level kernel
    (``dither_levels``, levels ≤ s), so every symbol is below ``2s + 1``."""
    fields = np.empty(CHUNK, dtype=np.uint32)
    mask = (np.uint32(1) << np.uint32(width - 1)) - np.uint32(1)
    for c0 in range(0, d, CHUNK):
        n = min(CHUNK, d - c0)
        unpack_chunk(buf, c0 * width, n, width, fields)
        for i in range(n):
            lev = np.int64(fields[i] & mask)
            sym[c0 + i] = (0 if lev == 0
                           else 2 * lev - 1 + np.int64(fields[i] >> np.uint32(width - 1)))
