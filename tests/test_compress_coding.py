"""The vector source coder (SPEC §3.4, `mpicomp.compress.coding`, ``coder=golomb``): round trip,
exact length against an independent closed form, near-entropy length, and ``dither`` with it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpicomp.compress import DecodeError, coding, kernels, make_compressor

# the coder's functions are Numba-compiled when Numba is installed; ``.py_func`` is the plain
# Python they fall back to without it (what an environment without Numba runs)
IMPLS = ["compiled", "python"] if kernels.HAVE_NUMBA else ["python"]


def impl(fn, kind):
    return getattr(fn, "py_func", fn) if kind == "python" else fn


def closed_form_bits(sym: np.ndarray, n_symbols: int) -> int:
    """Length of the vector source code written out from its definition (no shared code):
    γ(c_k + 1) per non-zero symbol, then per symbol in increasing count (all but the last) the
    Golomb codes ``⌊g/b⌋ + 1 + truncated-binary(g mod b)`` of its runs among the positions left."""
    def gamma(n):
        return 2 * (int(n).bit_length() - 1) + 1

    def golomb(g, b):
        if b == 1:
            return g + 1
        k = math.ceil(math.log2(b))
        return g // b + 1 + (k - 1 if g % b < 2**k - b else k)

    counts = np.bincount(sym, minlength=n_symbols)
    bits = sum(gamma(c + 1) for c in counts[1:])
    left = list(range(sym.size))
    for k in sorted(range(n_symbols), key=lambda k: (counts[k], k))[:-1]:
        c = int(counts[k])
        if c == 0:
            continue
        m = len(left)
        b = max(1, math.ceil(math.log(2) * (m - c) / c))
        hits = [i for i, p in enumerate(left) if sym[p] == k]
        runs = np.diff([-1] + hits) - 1
        bits += sum(golomb(int(g), b) for g in runs)
        left = [p for p in left if sym[p] != k]
    return bits


def empirical_entropy(sym: np.ndarray, n_symbols: int) -> float:
    p = np.bincount(sym, minlength=n_symbols) / sym.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def encode(sym, n_symbols, kind="compiled"):
    out = np.zeros(-(-coding.golomb_max_bits(sym.size, n_symbols) // 8), dtype=np.uint8)
    nbits = impl(coding.golomb_encode, kind)(sym.astype(np.int64), n_symbols, out)
    return out[: -(-nbits // 8)], nbits


def decode(stream, nbits, d, n_symbols, kind="compiled"):
    sym = np.full(d, -1, dtype=np.int64)
    used = impl(coding.golomb_decode, kind)(stream, stream.size * 8, n_symbols, sym)
    assert used == nbits
    return sym


def level_vectors():
    """Signed-level symbol vectors: the edge cases and random mixes (name, symbols, S)."""
    rng = np.random.default_rng(7)
    cases = [("empty", np.zeros(0, np.int64), 5), ("one zero", np.zeros(1, np.int64), 5),
             ("one level", np.array([3]), 5), ("all zeros", np.zeros(1000, np.int64), 9)]
    one = np.zeros(1000, np.int64)
    one[617] = 4
    cases.append(("one non-zero", one, 9))
    cases.append(("all non-zero", rng.integers(1, 9, 1000), 9))
    cases.append(("all the same non-zero", np.full(777, 2), 3))
    cases.append(("ties in every count", np.tile(np.arange(5), 40), 5))
    for share in (0.0, 0.5, 0.9, 0.999):
        S = 9
        p = np.r_[share, np.full(S - 1, (1 - share) / (S - 1))]
        cases.append((f"zeros {share}", rng.choice(S, size=4099, p=p), S))
    return cases


CASES = level_vectors()


@pytest.mark.parametrize("kind", IMPLS)
@pytest.mark.parametrize("name,sym,S", CASES, ids=[c[0] for c in CASES])
def test_round_trip_and_closed_form_length(name, sym, S, kind):
    stream, nbits = encode(sym, S, kind)
    assert np.array_equal(decode(stream, nbits, sym.size, S, kind), sym)
    assert nbits == closed_form_bits(sym, S)
    assert nbits <= coding.golomb_max_bits(sym.size, S)


def test_constant_vector_costs_only_its_counts():
    # every symbol but the most frequent codes its positions: one symbol everywhere → counts only
    sym = np.full(5000, 3)
    _, nbits = encode(sym, 9)
    assert nbits == 7 * 1 + (2 * 12 + 1)  # γ(1) for the seven absent symbols, γ(5001) for it


@pytest.mark.parametrize("share,S", [(0.5, 9), (0.9, 3), (0.99, 9), (0.0, 3)])
def test_length_is_close_to_the_empirical_entropy(share, S):
    # Golomb codes are within a few percent of the entropy of geometric runs (Gallager & van
    # Voorhis); with d = 2^18 i.i.d. symbols the count header adds < 40 bits per symbol.
    rng = np.random.default_rng(3)
    d = 2**18
    p = np.r_[share, np.full(S - 1, (1 - share) / (S - 1))]
    sym = rng.choice(S, size=d, p=p)
    _, nbits = encode(sym, S)
    H = empirical_entropy(sym, S)
    assert d * H <= nbits <= 1.03 * d * H + 40 * S


def test_length_falls_as_the_residual_grows_sparse():
    # a fixed vector whose entries are zeroed, more each time: the coded bits fall every time
    rng = np.random.default_rng(11)
    sym = rng.integers(0, 9, 8192)
    order = rng.permutation(sym.size)
    lengths = []
    for share in (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0):
        s = sym.copy()
        s[order[: int(share * sym.size)]] = 0
        lengths.append(encode(s, 9)[1])
    assert all(a > b for a, b in zip(lengths, lengths[1:])), lengths


def test_golomb_parameter_is_the_gallager_van_voorhis_choice_to_within_one():
    # b = ⌈ln2 (m − c)/c⌉ approximates ⌈log(2 − p)/−log(1 − p)⌉, p = c/m, the optimum for runs
    # with hit rate p; they agree for most (m, c) and never differ by more than one
    for m in (2, 3, 10, 100, 10**4, 10**6):
        for c in {1, 2, max(1, m // 10), max(1, m // 3), m // 2}:
            p = c / m
            exact = 1 if p >= 0.5 else math.ceil(math.log(2 - p) / -math.log(1 - p))
            assert abs(coding.golomb_parameter(m, c) - exact) <= 1


@pytest.mark.parametrize("kind", IMPLS)
def test_elias_and_golomb_codes_round_trip_large_values(kind):
    # one code after another in one stream, values up to 2^40 (the fallback must not wrap at
    # the width of a byte)
    values = [1, 2, 3, 255, 256, 257, 2**20 + 5, 2**40 - 1]
    params = [1, 2, 3, 7, 64, 1000, 2**20 + 1]
    out = np.zeros(4096, np.uint8)
    pos = 0
    for n in values:
        pos = impl(coding.write_gamma, kind)(out, pos, n)
    for g in values[:6]:
        for b in params:
            pos = impl(coding.write_golomb, kind)(out, pos, g - 1, b)
    read = 0
    for n in values:
        got, read = impl(coding.read_gamma, kind)(out, read, pos)
        assert got == n
    for g in values[:6]:
        for b in params:
            got, read = impl(coding.read_golomb, kind)(out, read, pos, b)
            assert got == g - 1
    assert read == pos


def stream_of(counts, runs_and_params):
    """A hand-made stream: γ(c + 1) per symbol ≥ 1, then Golomb codes ``(run, b)``."""
    out = np.zeros(64, np.uint8)
    pos = 0
    for c in counts:
        pos = coding.write_gamma(out, pos, c + 1)
    for g, b in runs_and_params:
        pos = coding.write_golomb(out, pos, g, b)
    return out, pos


@pytest.mark.parametrize("kind", IMPLS)
def test_inconsistent_streams_are_rejected(kind):
    decode_ = impl(coding.golomb_decode, kind)
    out = np.empty(10, np.int64)
    # symbol 1 once among 10 positions (b = ⌈ln2·9⌉ = 7), but its run skips 20 positions
    buf, n = stream_of([1, 0], [(20, 7)])
    assert decode_(buf, n, 3, out) == -1
    # counts whose sum overflows 64 bits must not wrap into a small total
    buf, n = stream_of([1, 2**62, 2**62], [])
    assert decode_(buf, n, 4, out) == -1
    # counts of 6 + 6 for 10 positions
    buf, n = stream_of([6, 6], [])
    assert decode_(buf, n, 3, out) == -1


def test_truncated_or_malformed_streams_are_rejected():
    rng = np.random.default_rng(0)
    sym = rng.choice(9, size=3000, p=np.r_[0.8, np.full(8, 0.025)])
    stream, nbits = encode(sym, 9)
    out = np.empty(sym.size, np.int64)
    for cut in (1, 8, nbits // 2, nbits - 1):
        assert coding.golomb_decode(stream, cut, 9, out) == -1
    too_many = np.zeros(8, np.uint8)
    coding.write_gamma(too_many, 0, 40)  # a count of 39 for a vector of 10
    assert coding.golomb_decode(too_many, 64, 3, np.empty(10, np.int64)) == -1


# -- as the wire format of dithering ---------------------------------------------------------------
@pytest.mark.parametrize("d", [0, 1, 7, 8, 1025, 2**20 + 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", ["qsgd:s=4", "dither:p=inf,s=1,block=64", "qsgd:s=16,block=1000"])
def test_dither_golomb_same_values_exact_length(spec, d, dtype):
    rng = np.random.default_rng(d)
    x = (rng.standard_normal(d) * (rng.random(d) < 0.3)).astype(dtype)  # a sparse residual
    dense, coded = make_compressor(spec), make_compressor(spec + ",coder=golomb")
    pd = dense.encode(x, np.random.default_rng(5))
    pc = coded.encode(x, np.random.default_rng(5))
    y = dense.decode(pd.buffer, d, dtype)
    assert np.array_equal(coded.decode(pc.buffer, d, dtype), y)  # same draws: same values
    # the levels are those of the dense fields; the norms are sent as dense sends them
    nb = 0 if d == 0 else -(-d // (coded.block or d))
    norm_bits = 8 * np.dtype(dtype).itemsize * nb
    unit = np.repeat(np.frombuffer(pd.buffer[8 : 8 + norm_bits // 8].tobytes(), dtype) / coded.s,
                     coded.block or d)[:d].astype(np.float64)
    levels = np.zeros(d, np.int64)
    nz = unit > 0
    levels[nz] = np.rint(np.abs(y[nz].astype(np.float64)) / unit[nz])
    sym = np.where(levels == 0, 0, 2 * levels - 1 + (y < 0))
    want = norm_bits + (closed_form_bits(sym, 2 * coded.s + 1) if d <= 5000 else
                        coding.golomb_encode(sym, 2 * coded.s + 1,
                                             np.zeros(coded.nbytes_max(d, dtype), np.uint8)))
    assert pc.nbits == want
    assert pc.nbytes == 8 + -(-pc.nbits // 8) <= coded.nbytes_max(d, dtype)
    if d > 1000:
        assert pc.nbits < pd.nbits  # a 70 %-zero residual codes below the fixed-width fields


def test_dither_golomb_rejects_a_damaged_stream():
    x = np.random.default_rng(0).standard_normal(2000).astype(np.float32)
    op = make_compressor("qsgd:s=4,coder=golomb")
    p = op.encode(x, np.random.default_rng(1))
    with pytest.raises(DecodeError, match="truncated or malformed|bytes"):
        op.decode(p.buffer[:-3], 2000, np.float32)
    longer = np.concatenate([p.buffer, np.zeros(2, np.uint8)])
    with pytest.raises(DecodeError, match="bytes"):
        op.decode(longer, 2000, np.float32)


@pytest.mark.parametrize("kind", IMPLS)
@pytest.mark.parametrize("name,sym,S", CASES, ids=[c[0] for c in CASES])
def test_both_run_finders_and_both_decoders_agree(name, sym, S, kind):
    # the coder picks the cheaper of two algorithms by the counts: each must give the same
    # runs (encoding) and the same positions (decoding) on every vector
    sym = sym.astype(np.int64)
    counts = np.bincount(sym, minlength=S).astype(np.int64)
    order = coding._coding_order(counts)
    turn = np.argsort(order)
    start = np.concatenate([[0], np.cumsum([counts[k] for k in order[:-1]] + [0])]).astype(np.int64)
    a, b = np.empty(start[-1], np.int64), np.empty(start[-1], np.int64)
    impl(coding._runs_by_turns, kind)(sym, turn, start, a)
    impl(coding._runs_by_scan, kind)(sym, order, start, b)
    assert np.array_equal(a, b)
    stream, nbits = encode(sym, S)
    header = sum(2 * (int(c + 1).bit_length() - 1) + 1 for c in counts[1:])
    for place in (coding._place_by_tree, coding._place_by_scan):
        out = np.full(sym.size, order[-1], np.int64)
        assert impl(place, kind)(stream, header, nbits, counts, order, out) == nbits
        assert np.array_equal(out, sym)
