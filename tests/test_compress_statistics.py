"""Statistical properties of the compression operators (SPEC §1, §6), checked by Monte Carlo.

Every tolerance is derived from the sample size. The mean of N i.i.d. draws deviates from its
expectation by more than z·σ̂/√N (σ̂ the sample standard deviation) with probability about
2·Φ(−z) (CLT; N ≥ 1500 draws everywhere, mostly 6000 or 100000): 5.7e-7 for z = 5 (one
comparison per test) and 3.8e-8 for z = 5.5, the Bonferroni-style value used where one test
compares many coordinates (≲ 3000 coordinate comparisons in this file in all, so the
family-wise false-alarm rate of the whole file on a correct library stays ≲ 1e-4). Every seed
is fixed, so the outcome is deterministic.

Two ways of drawing N independent samples of C(x):

- ``loop``: N calls of ``decode(encode(x, rng))`` with one generator (the operator exactly as
  used, block = 0 included);
- ``tile``: one call on ``x`` repeated N times, for operators that act on each block of length
  ``block`` (or each coordinate) independently: each copy of ``x`` then holds whole blocks and
  gets its own independent random words (the counter-based generator gives every coordinate
  its own word), so the N rows are N independent draws, at a fraction of the cost.

The designed inputs keep every coordinate's rounding probability either 0 or 1 up to float
round-off (a deterministic coordinate: then σ̂ = 0 and only float round-off is allowed) or inside
[0.03, 0.97] (checked by ``test_designed_inputs_round_with_moderate_probability``), so σ̂ is a
good estimate of σ and the CLT approximation holds at the z used.

Exact expectations used below (t = |x_j| ≥ 0; every unbiased rounding operator here rounds t to
one of two neighbours lo ≤ t ≤ hi, up with probability q = (t − lo)/(hi − lo)):
E (C_j − x_j)² = (hi − t)(t − lo), E C_j² = lo² + q(hi² − lo²), P(C_j ≠ 0) = [lo > 0] + q[lo = 0].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from mpicomp.compress import make_compressor
from mpicomp.compress.compose import Composition
from mpicomp.compress.dithering import Dither, NaturalDither
from mpicomp.compress.natural import Natural
from mpicomp.compress.sparse import RandK, TopK

Z = 5.0  # one comparison per test: P(|N(0,1)| > 5) ≈ 5.7e-7
Z_COORD = 5.5  # per-coordinate comparisons (Bonferroni over ≲ 3000): P ≈ 3.8e-8 each
N_LOOP = 6000  # draws for operators sampled call by call
N_TILE = 100000  # draws for operators sampled by tiling
ULP = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}  # unit round-off


# --------------------------------------------------------------------------- inputs


def signs(d, seed):
    return np.where(np.random.default_rng(seed).random(d) < 0.5, -1.0, 1.0)


def equal_magnitudes(d, seed, scale=1.0):
    """±scale: attains sup ‖x‖₁‖x‖_p/‖x‖² for p = 1, 2 (dithering with s = 1 is then tight)."""
    return scale * signs(d, seed)


def peak_and_floor(d, seed, t, scale=1.0, peak=0):
    """(1, t, …, t)·scale with random signs and the 1 at ``peak``."""
    x = np.full(d, t)
    x[peak] = 1.0
    return scale * x * signs(d, seed)


def linf_tight(b, seed, scale=1.0, peak=0):
    """(1, t, …, t) with t = 1/(√b + 1): attains ‖x‖₁‖x‖∞/‖x‖² = (1 + √b)/2, the maximum."""
    return peak_and_floor(b, seed, 1 / (math.sqrt(b) + 1), scale, peak)


def gaussian(d, seed, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(d)


def moderate(spec, d, seed, scale=1.0):
    """A Gaussian vector (first seed in seed, seed + 7919, … that qualifies) on which ``spec``
    (one block) rounds every coordinate deterministically or with probability in [0.03, 0.97]."""
    op = make_compressor(spec)
    for i in range(1000):
        x = gaussian(d, seed + 7919 * i, scale)
        if moderate_probabilities(op, x):
            return x
    raise AssertionError(f"no moderate input for {spec}")


def nat_hard(d, seed, scale_exp=0):
    """±(4/3)·2^k: C_nat's worst case, E C(t)²/t² = 9/8 (ω = 1/8 attained)."""
    k = np.random.default_rng(seed).integers(-6, 7, d) + scale_exp
    return signs(d, seed + 1) * np.ldexp(4.0 / 3.0, k)


# Values spanning many magnitudes (mantissa fractions away from 0 and 1), one exact power of two
# and, in float32, a subnormal (rounds to 0 or to the smallest normal 2^-126).
NAT_F32 = np.array([3.1e-39, -1.7e-30, 2.6e-12, -0.0071, 1.0, -3.3, 1234.5, -7.7e20, 2.9e37],
                   np.float32)
# squared errors stay finite
NAT_F64 = np.array([1.1e-309, -1.7e-300, 3.3e-100, -2.6e-12, 0.0071, 0.25, -3.3, 1234.5, -7.7e40,
                    2.9e70])


# --------------------------------------------------------------------------- exact expectations


def _nu(x, p, block):
    """Per-element block norm as the operator transmits it: rounded up to x's dtype."""
    b = x.size if block <= 0 else block
    nb = -(-x.size // b)
    pad = np.zeros(nb * b)
    pad[: x.size] = np.abs(x.astype(np.float64))
    nu = np.linalg.norm(pad.reshape(nb, b), ord=p, axis=1)
    if x.dtype == np.float32:
        cast = nu.astype(np.float32)
        low = cast < nu
        cast[low] = np.nextafter(cast[low], np.float32(np.inf))
        nu = cast.astype(np.float64)
    return np.repeat(nu, b)[: x.size]


def natural_bracket(t, dtype):
    """C_nat's neighbours of t ≥ 0: powers of two 2^e ≤ t < 2^(e+1); subnormals: 0 and 2^emin."""
    tiny = float(np.finfo(dtype).tiny)
    m, e = np.frexp(t)
    lo = np.where(t >= tiny, np.ldexp(0.5, e), 0.0)
    lo = np.where(t > 0, lo, 0.0)
    hi = np.where(t >= tiny, 2 * lo, tiny)
    hi = np.where(t > 0, hi, 0.0)
    return lo, hi


def bracket(op, x):
    """(t, lo, hi) for the two-point rounding operators: dithering, natural dithering, C_nat."""
    t = np.abs(x.astype(np.float64))
    if isinstance(op, Natural):
        return (t, *natural_bracket(t, x.dtype))
    if isinstance(op, NaturalDither):
        nu = _nu(x, op.p, op.block)
        y = np.divide(t, nu, out=np.zeros_like(t), where=nu > 0)
        small = 2.0 ** (1 - op.s)
        _, e = np.frexp(np.maximum(y, 1e-300))
        lo = np.where(y >= small, np.ldexp(0.5, e), 0.0)
        hi = np.where(y >= small, np.minimum(2 * lo, 1.0), small)
        return y * nu, lo * nu, hi * nu
    if isinstance(op, Dither):
        nu = _nu(x, op.p, op.block)
        a = np.divide(op.s * t, nu, out=np.zeros_like(t), where=nu > 0)
        lo = np.floor(a) * nu / op.s
        return t, lo, np.where(a < op.s, lo + nu / op.s, lo)
    raise TypeError(op)


def round_up_probability(t, lo, hi):
    return np.divide(t - lo, hi - lo, out=np.zeros_like(t), where=hi > lo)


def moderate_probabilities(op, x):
    q = round_up_probability(*bracket(op, x))
    # q within 1e-12 of 0 or 1 (float round-off of t/ν): deterministic but for u ≈ 0
    return bool(np.all((q <= 1e-12) | (q >= 1 - 1e-12) | ((q >= 0.03) & (q <= 0.97))))


def exact_mse(op, x):
    """E‖C(x) − x‖² in closed form (None if unknown)."""
    x64 = x.astype(np.float64)
    sq = float(x64 @ x64)
    if isinstance(op, (Dither, NaturalDither, Natural)) and getattr(op, "clip", 0) == 0:
        t, lo, hi = bracket(op, x)
        return float(np.sum((hi - t) * (t - lo)))
    if isinstance(op, RandK):
        return (x.size / op.k_of(x.size) - 1) * sq
    if isinstance(op, Composition) and isinstance(op.inner, Natural):
        k = op.outer.k_of(x.size)
        if isinstance(op.outer, RandK):  # E‖C‖² = (d/k)·Σ_j E B(x_j)²
            return x.size / k * (sq + exact_mse(op.inner, x)) - sq
        if isinstance(op.outer, TopK):  # ‖x_{S^c}‖² + E‖B(x_S) − x_S‖²
            keep = np.zeros(x.size, bool)
            keep[np.argsort(-np.abs(x64), kind="stable")[:k]] = True
            return float(x64[~keep] @ x64[~keep]) + exact_mse(op.inner, x[keep])
    return None


# --------------------------------------------------------------------------- sampling


def draw_loop(op, x, n, seed):
    rng = np.random.default_rng(seed)
    out = np.empty((n, x.size))
    for i in range(n):
        out[i] = op.decode(op.encode(x, rng).buffer, x.size, x.dtype)
    return out


def draw_tile(op, x, n, seed):
    block = getattr(op, "block", None)
    per_coordinate = isinstance(op, Natural)
    assert per_coordinate or (block and x.size % block == 0), "tiling needs whole blocks"
    rng = np.random.default_rng(seed)
    return op(np.tile(x, n), rng).astype(np.float64).reshape(n, x.size)


@dataclass
class Case:
    id: str
    spec: str
    x: np.ndarray = field(repr=False)
    mode: str = "loop"  # or "tile"
    tight: bool = False  # x attains sup E‖C(x) − x‖²/‖x‖², which equals ω
    seed: int = 0
    draws: int = 0  # number of draws, if not the default of the mode

    @property
    def n(self):
        return self.draws or (N_LOOP if self.mode == "loop" else N_TILE)


_STATS: dict = {}


def stats(case: Case) -> dict:
    """Summary statistics of N draws of C(x) (computed once per case)."""
    if case.id not in _STATS:
        op = make_compressor(case.spec)
        draw = draw_loop if case.mode == "loop" else draw_tile
        c = draw(op, case.x, case.n, case.seed)
        x = case.x.astype(np.float64)
        err = ((c - x) ** 2).sum(axis=1)
        # per-coordinate statistics of (C_j − x_j)/w_j, w_j a power of two near |x_j| (exact
        # scaling: no under/overflow for values spanning many magnitudes; and the mean of the
        # differences has no summation round-off where C_j = x_j on every draw)
        w = np.where(x != 0, np.ldexp(1.0, np.frexp(x)[1]), 1.0)
        r = (c - x) / w
        sq = (c**2).sum(axis=1)
        nnz = (c != 0).sum(axis=1)
        n = c.shape[0]
        assert np.isfinite(err.std()) and np.isfinite(sq.std()) and np.isfinite(r.std(axis=0)).all()
        _STATS[case.id] = dict(
            op=op, n=n, dev=r.mean(axis=0), sd=r.std(axis=0, ddof=1),
            absmax=np.abs(c / w).max(axis=0), w=w,
            mse=err.mean(), mse_se=err.std(ddof=1) / math.sqrt(n),
            sq=sq.mean(), sq_se=sq.std(ddof=1) / math.sqrt(n),
            nnz=nnz.mean(), nnz_se=nnz.std(ddof=1) / math.sqrt(n),
        )
    return _STATS[case.id]


def coordinate_tolerance(st, dtype):
    """Z_COORD standard errors, plus float round-off (in units of w_j, see `stats`): 8 ulp of
    the decoded values, and N·2⁻⁵³ relative for summing N float64 terms (matters only where
    the standard error is 0: a coordinate that is the same on every draw)."""
    roundoff = (8 * ULP[np.dtype(dtype)] + st["n"] * ULP[np.dtype(np.float64)]) * st["absmax"]
    return Z_COORD * st["sd"] / math.sqrt(st["n"]) + roundoff


# --------------------------------------------------------------------------- the unbiased cases

B = 8  # block length of the tiled dithering cases


def _dither_x(p, s, d, seed, scale=1.0, peak=0):
    """Adversarial-ish input for dither(p, s) on a block of length d.

    s = 1: the maximisers of ‖x‖₁‖x‖_p/‖x‖² (tight: E‖C − x‖² = ω‖x‖²). s = 3: the worst cases
    found by a numerical search of Σ(ν/s)²f(1 − f)/‖x‖² (ratio to ω about 0.25 for p = 2,
    0.75 for p = ∞, 0.94 for p = 1: the QSGD-type bounds are not tight for s > 1).
    """
    if s == 1:
        return linf_tight(d, seed, scale, peak) if p == "inf" else equal_magnitudes(d, seed, scale)
    if p == "inf":
        return peak_and_floor(d, seed, 1 / 7, scale, peak)
    if p == "2":
        x = peak_and_floor(d, seed, 0.2, scale, peak)
        x[(peak + 1) % d] *= 3.0  # (1, 0.6, 0.2, …)
        return x
    return equal_magnitudes(d, seed, scale)


def _cases():
    cases = []
    for p in ("1", "2", "inf"):
        for s in (1, 3):
            spec = f"dither:p={p},s={s}"
            cases.append(Case(f"{spec}/whole", spec, _dither_x(p, s, 8, 11, 0.7, peak=3), "loop",
                              s == 1, 1))
            # blocks: two tiled blocks of different scales (s = 1: both tight)
            x = np.concatenate([_dither_x(p, s, B, 12, 1.0, peak=5),
                                _dither_x(p, s, B, 13, 1e-3, peak=0)])
            if s == 3:  # and a generic Gaussian block
                x = np.concatenate([x, moderate(spec, B, 14, 30.0)])
            cases.append(Case(f"{spec}/block", f"{spec},block={B}", x, "tile", s == 1, 2))
    # a ragged last block (8, 8, 4)
    x = np.concatenate([moderate("dither:p=2,s=3", B, 17), moderate("dither:p=2,s=3", B, 18, 1e-2),
                        moderate("dither:p=2,s=3", 4, 19, 10.0)])
    cases.append(Case("dither:p=2,s=3/ragged", f"dither:p=2,s=3,block={B}", x, "loop", seed=23))
    # float32 input: the block norm is sent rounded up to float32
    cases.append(Case("dither:p=2,s=3/block/f32", f"dither:p=2,s=3,block={B}",
                      np.concatenate([moderate("dither:p=2,s=3", B, 15),
                                      moderate("dither:p=2,s=3", B, 16, 1e3)]).astype(np.float32),
                      "tile", seed=3))
    # QSGD on d = 64 with |x_j| all equal: ratio E‖C − x‖²/‖x‖² is exactly 1 (s = 4), 7 (s = 1)
    cases.append(Case("qsgd:s=4/d64", "qsgd:s=4", equal_magnitudes(64, 21, 0.3), "loop", seed=4))
    cases.append(Case("qsgd:s=1/d64", "qsgd:s=1", equal_magnitudes(64, 22, 0.3), "loop", True, 5))
    cases.append(Case("qsgd:s=4,elias", "qsgd:s=4,coder=elias", moderate("qsgd:s=4", 16, 23),
                      "loop", seed=6))
    cases.append(Case("qsgd:s=4,block,elias", f"qsgd:s=4,block={B},coder=elias",
                      np.concatenate([moderate("qsgd:s=4", B, 24),
                                      moderate("qsgd:s=4", B, 25, 1e-2)]),
                      "tile", seed=7))
    # TernGrad without clipping: (1, t, …, t) with t = 1/(√16 + 1) is tight
    cases.append(Case("terngrad", "terngrad", linf_tight(16, 31, 2.0, peak=7), "loop", True, 8))
    cases.append(Case("terngrad/block", f"terngrad:block={B}",
                      np.concatenate([linf_tight(B, 32, 1.0, 2), linf_tight(B, 33, 50.0, 6)]),
                      "tile", True, 9))
    # natural dithering, s = 3 so that rounding happens in most coordinates
    for p in ("2", "inf"):
        spec = f"natural_dither:p={p},s=3"
        cases.append(Case(spec, spec, moderate(spec, 16, 41), "loop", seed=10))
        cases.append(Case(f"{spec}/block", f"{spec},block={B}",
                          np.concatenate([moderate(spec, B, 42), moderate(spec, B, 43, 1e-4)]),
                          "tile", seed=11))
    # C_nat: magnitudes over the whole range, an exact power of two, a subnormal; and the tight case
    cases.append(Case("natural/f32", "natural", NAT_F32, "tile", seed=12))
    cases.append(Case("natural/f64", "natural", NAT_F64, "tile", seed=13))
    cases.append(Case("natural/f32/tight", "natural", nat_hard(16, 51).astype(np.float32), "tile",
                      True, 14))
    cases.append(Case("natural/f64/tight", "natural", nat_hard(16, 52, -40), "tile", True, 15))
    # rand-k: E‖C − x‖² = (d/k − 1)‖x‖² exactly for any x, so every x is tight
    cases.append(Case("randk", "randk:k=0.25", gaussian(16, 61), "loop", True, 16))
    cases.append(Case("randk,shared", "randk:k=0.25,shared=1", gaussian(16, 62), "loop", True, 17))
    # rand-k + C_nat at (4/3)·2^k: tight for ω = ω₁ω₂ + ω₁ + ω₂
    cases.append(Case("randk+natural", "randk:k=0.25+natural", nat_hard(16, 63), "loop", True, 18))
    return cases


CASES = _cases()
TIGHT = [c for c in CASES if c.tight]
EXACT = [c for c in CASES if exact_mse(make_compressor(c.spec), c.x) is not None]


def ids(cases):
    return [c.id for c in cases]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_designed_inputs_round_with_moderate_probability(case):
    """Validity of the z-tests: each coordinate is deterministic or rounds with q ∈ [0.03, 0.97]."""
    op = make_compressor(case.spec)
    ops = [op.inner] if isinstance(op, Composition) else [op]
    for o in ops:
        if isinstance(o, RandK):
            continue
        assert moderate_probabilities(o, case.x), round_up_probability(*bracket(o, case.x))


# --------------------------------------------------------------------------- 1. unbiasedness


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_unbiased(case):
    """E C(x) = x coordinate by coordinate: |mean_j − x_j| ≤ 5.5·σ̂_j/√N (+ round-off)."""
    st = stats(case)
    assert st["op"].unbiased
    dev = np.abs(st["dev"])
    tol = coordinate_tolerance(st, case.x.dtype)
    assert np.all(dev <= tol), f"{case.id}: |mean − x| / tolerance = {dev / tol}"


def test_topk_is_biased_deterministically():
    """top-k returns the same vector on every draw (so that is its mean), and it is not x."""
    op = make_compressor("topk:k=0.2")
    x = gaussian(20, 71)
    draws = [op(x, np.random.default_rng(seed)) for seed in range(5)]
    assert not op.unbiased and op.omega(20) is None
    for c in draws[1:]:
        np.testing.assert_array_equal(c, draws[0])
    kept = np.argsort(-np.abs(x))[:4]
    dropped = np.setdiff1d(np.arange(20), kept)
    np.testing.assert_array_equal(draws[0][kept], x[kept])
    assert np.all(draws[0][dropped] == 0) and np.all(x[dropped] != 0)


def test_terngrad_with_clipping_is_biased():
    """clip = 2.5: E C(x) = clip(x, ±2.5σ_B), measurably not x at the outlier (x elsewhere)."""
    b = 16
    x = 0.5 * gaussian(b, 72)
    x[3] = 9.0
    bound = 2.5 * np.std(x)
    assert 9.0 > 1.2 * bound  # the outlier is clipped by a wide margin
    scale = np.repeat([1.0, -3.0], b)  # two blocks
    # clipping loops over blocks in Python: fewer draws
    case = Case("terngrad:clip", f"terngrad:block={b},clip=2.5", np.tile(x, 2) * scale, "tile",
                seed=19, draws=10000)
    st = stats(case)
    assert not st["op"].unbiased and st["op"].omega(2 * b) is None
    tol = coordinate_tolerance(st, np.float64)  # units of w (stats): compare dev·w
    dev = st["dev"] * st["w"]  # mean of C(x) − x
    out = np.array([3, b + 3])
    # > 10 % of x_j
    assert np.all(np.abs(dev[out]) > (tol * st["w"])[out] + 0.1 * np.abs(case.x[out]))
    clipped = np.clip(np.tile(x, 2), -bound, bound) * scale
    assert np.all(np.abs(dev - (clipped - case.x)) <= tol * st["w"])  # E C(x) = clipped x


# --------------------------------------------------------------------------- 2. variance bound ω


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_variance_bound(case):
    """E‖C(x) − x‖² ≤ ω(d)‖x‖²: the sample mean may exceed it by at most 5 standard errors."""
    st = stats(case)
    omega = st["op"].omega(case.x.size)
    sq = float(case.x.astype(np.float64) @ case.x.astype(np.float64))
    assert st["mse"] <= omega * sq + Z * st["mse_se"], (case.id, st["mse"] / sq, omega)


@pytest.mark.parametrize("case", TIGHT, ids=ids(TIGHT))
def test_variance_bound_is_attained(case):
    """Where x attains the supremum, E‖C(x) − x‖² = ω‖x‖² (two-sided, 5 SE): a ω too large
    (or too small) is caught; and the ratio is not absurdly below ω."""
    st = stats(case)
    omega = st["op"].omega(case.x.size)
    sq = float(case.x.astype(np.float64) @ case.x.astype(np.float64))
    assert abs(st["mse"] - omega * sq) <= Z * st["mse_se"] + 1e-9 * omega * sq, (
        case.id, st["mse"] / sq, omega)
    assert st["mse"] / sq >= 0.5 * omega


@pytest.mark.parametrize("case", EXACT, ids=ids(EXACT))
def test_variance_equals_closed_form(case):
    """E‖C(x) − x‖² equals its closed form (module docstring) within 5 standard errors."""
    st = stats(case)
    expected = exact_mse(st["op"], case.x)
    assert abs(st["mse"] - expected) <= Z * st["mse_se"] + 1e-9 * expected, (
        case.id, st["mse"], expected)


# --------------------------------------------------------------------------- 3. p-quantization


PQUANT = []
for _p in ("2", "inf"):
    _x = gaussian(40, 81) * np.repeat([1.0, 0.01, 100.0], 16)[:40]
    _x[7] = 0.0
    PQUANT.append(Case(f"pquant:p={_p}/ragged", f"dither:p={_p},s=1,block=16", _x, "loop",
                       seed=20))
    PQUANT.append(Case(f"pquant:p={_p}/tiled", f"dither:p={_p},s=1,block=16", _x[:32], "tile",
                       seed=21))


@pytest.mark.parametrize("case", PQUANT, ids=ids(PQUANT))
def test_p_quantization_second_moment_and_sparsity(case):
    """s = 1 (SPEC 1.1): E‖C(x)‖² = Σ_B ‖x_B‖₁‖x_B‖_p and E nnz = Σ_B ‖x_B‖₁/‖x_B‖_p, each
    within 5 standard errors (float64 input: the transmitted norm is ‖x_B‖_p to 1e-16)."""
    st = stats(case)
    x = case.x
    blocks = [x[i : i + 16] for i in range(0, x.size, 16)]
    p = math.inf if case.spec.startswith("dither:p=inf") else 2
    second = sum(np.abs(b).sum() * np.linalg.norm(b, p) for b in blocks)
    count = sum(np.abs(b).sum() / np.linalg.norm(b, p) for b in blocks)
    assert abs(st["sq"] - second) <= Z * st["sq_se"] + 1e-12 * second, (st["sq"], second)
    assert abs(st["nnz"] - count) <= Z * st["nnz_se"] + 1e-12 * count, (st["nnz"], count)


# --------------------------------------------------------------------------- 4. QSGD


@pytest.mark.parametrize("s, ratio", [(4, 1.0), (1, 7.0)])
def test_qsgd_variance_bound(s, ratio):
    """QSGD Lemma 3.1 on d = 64: E‖C(x) − x‖² ≤ min(d/s², √d/s)‖x‖², with |x_j| all equal (the
    most adversarial x for s = 4, ratio exactly 1 = half the bound; for s = 1 exactly √d − 1)."""
    case = next(c for c in CASES if c.id == f"qsgd:s={s}/d64")
    st = stats(case)
    d = 64
    bound = min(d / s**2, math.sqrt(d) / s)
    assert st["op"].omega(d) <= bound
    sq = float(case.x @ case.x)
    assert st["mse"] <= bound * sq + Z * st["mse_se"]
    # (for s = 4 every coordinate errs by exactly ν/8 either way: the error is deterministic)
    assert abs(st["mse"] / sq - ratio) <= Z * st["mse_se"] / sq + 1e-9


# --------------------------------------------------------------------------- 5. C_nat


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_natural_nine_eighths(dtype):
    """E C(t)²/t² = 9/8 and E C(t)/t = 1 at |t| = (4/3)·2^k (two-sided, 5.5 SE per k). With
    the float value of (4/3)·2^k the exact ratio differs from 9/8 by O(ε²) (a maximum)."""
    ks = (np.array([-100, -30, -7, -1, 0, 1, 13, 40, 100]) if dtype == np.float64
          else np.array([-120, -30, -7, -1, 0, 1, 13, 40, 120]))
    t = np.concatenate([np.ldexp(4.0 / 3.0, ks), -np.ldexp(4.0 / 3.0, ks)]).astype(dtype)
    n = 20000
    c = draw_tile(make_compressor("natural"), t, n, seed=30)
    t64 = t.astype(np.float64)
    ratio2 = (c / t64) ** 2
    ratio1 = c / t64
    se2 = ratio2.std(axis=0, ddof=1) / math.sqrt(n)
    se1 = ratio1.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(ratio2.mean(axis=0) - 9 / 8) <= Z_COORD * se2), ratio2.mean(axis=0)
    assert np.all(np.abs(ratio1.mean(axis=0) - 1) <= Z_COORD * se1), ratio1.mean(axis=0)
    assert set(np.unique(np.abs(ratio1)).round(6)) == {0.75, 1.5}  # the two neighbours only


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_natural_exact_at_powers_of_two(dtype):
    """C(t) == t on every draw when t is a (normal) power of two, and C(0) == 0."""
    info = np.finfo(dtype)
    t = np.array([1.0, -1.0, 2.0, 0.5, -2.0**-20, 2.0**50, float(info.tiny), -float(info.tiny),
                  float(2.0 ** (info.maxexp - 1)), 0.0], dtype=dtype)
    c = draw_tile(make_compressor("natural"), t, 5000, seed=31)
    assert np.all(c == t.astype(np.float64))


# --------------------------------------------------------------------------- 6. ℓ∞ vs ℓ2


def test_linf_dithering_has_less_variance_than_l2():
    """s = 1, d = 256 Gaussian, one block: E‖C − x‖² is ‖x‖₁‖x‖_p − ‖x‖², about 3e2 for ℓ∞ and
    3e3 for ℓ2; require the ℓ∞ upper 5-SE limit below half the ℓ2 lower limit. Worst cases: ω
    is (√d − 1)/2 for ℓ∞, half that of ℓ2 (SPEC 1.1)."""
    x = gaussian(256, 91)
    n = 1500
    mse = {}
    for p in ("2", "inf"):
        op = make_compressor(f"dither:p={p},s=1")
        err = ((draw_loop(op, x, n, seed=40) - x) ** 2).sum(axis=1)
        mse[p] = (err.mean(), err.std(ddof=1) / math.sqrt(n))
    assert mse["inf"][0] + Z * mse["inf"][1] < 0.5 * (mse["2"][0] - Z * mse["2"][1]), mse
    assert make_compressor("dither:p=inf,s=1").omega(256) == pytest.approx(
        0.5 * make_compressor("dither:p=2,s=1").omega(256))


# ---------------------------------------------------------------------- 7. contraction (biased)


def test_topk_contraction_random_vectors():
    """‖C(x) − x‖² ≤ (1 − k/d)‖x‖² (deterministic) over many x, and it equals ‖x‖² minus the
    k largest squares."""
    op = make_compressor("topk:k=0.1")
    d = 32
    k = 3
    assert op.delta(d) == k / d
    rng = np.random.default_rng(100)
    for i in range(300):
        x = (rng.standard_normal(d) * np.exp(rng.uniform(-4, 4, d)) if i % 2
             else rng.standard_t(1.5, d))
        e = float(np.sum((op(x) - x) ** 2))
        sq = float(x @ x)
        assert e <= (1 - op.delta(d)) * sq * (1 + 1e-12)
        assert e == pytest.approx(sq - np.sort(x**2)[-k:].sum(), rel=1e-9, abs=1e-12 * sq)


def test_topk_contraction_is_tight_for_equal_magnitudes():
    op = make_compressor("topk:k=0.1")
    x = equal_magnitudes(32, 101, 0.37)
    e = float(np.sum((op(x) - x) ** 2))
    assert e == pytest.approx((1 - op.delta(32)) * float(x @ x), rel=1e-12)


def test_scaled_sign_error_is_exact():
    """‖C(x) − x‖² = ‖x‖² − Σ_B ‖x_B‖₁²/|B| (round-off only) ≤ (1 − 1/b)‖x‖², b = 16, with a
    ragged last block of 8 and an exact zero (sign(0) = +1); equality with one non-zero a block."""
    op = make_compressor("scaled_sign:block=16")
    assert op.delta(40) == 1 / 16
    rng = np.random.default_rng(102)
    for i in range(100):
        x = rng.standard_normal(40) * np.exp(rng.uniform(-3, 3, 40))
        x[i % 40] = 0.0
        e = float(np.sum((op(x) - x) ** 2))
        blocks = [x[j : j + 16] for j in range(0, 40, 16)]
        expected = float(x @ x) - sum(np.abs(b).sum() ** 2 / b.size for b in blocks)
        assert e == pytest.approx(expected, rel=1e-10, abs=1e-13 * float(x @ x))
        assert e <= (1 - op.delta(40)) * float(x @ x) * (1 + 1e-12)
    x = np.zeros(48)
    x[[5, 16 + 9, 32 + 15]] = [2.0, -0.5, 7.0]
    e = float(np.sum((op(x) - x) ** 2))
    assert e == pytest.approx((1 - 1 / 16) * float(x @ x), rel=1e-12)


def test_topk_natural_contraction():
    """top-k + C_nat: E‖C(x) − x‖² ≤ (1 − δ)‖x‖², δ = op.delta(d) = (k/d)(1 − 1/8); equal
    magnitudes at (4/3)·2^k attain it (‖x_{S^c}‖² = (1 − k/d)‖x‖², C_nat's 9/8 on x_S), so
    also two-sided within 5 SE."""
    d = 20
    case = Case("topk+natural", "topk:k=0.2+natural", signs(d, 103) * 4.0 / 3.0, "loop", seed=22)
    st = stats(case)
    op = st["op"]
    delta = op.delta(d)
    assert delta == pytest.approx(0.2 * (1 - 1 / 8))
    sq = float(case.x @ case.x)
    assert st["mse"] <= (1 - delta) * sq + Z * st["mse_se"]
    assert abs(st["mse"] - (1 - delta) * sq) <= Z * st["mse_se"] + 1e-9 * sq
    assert abs(st["mse"] - exact_mse(op, case.x)) <= Z * st["mse_se"] + 1e-9 * sq


# ---------------------------------------------------------------- 8. natural dithering, rand-k


@pytest.mark.parametrize("p", ["2", "inf"])
@pytest.mark.parametrize("s", [2, 3, 8])
def test_natural_dither_omega_holds_in_closed_form(p, s):
    """Horváth et al.'s ω for natural dithering bounds the closed-form E‖C(x) − x‖²/‖x‖²
    (verified by Monte Carlo in test_variance_equals_closed_form) over many random x."""
    rng = np.random.default_rng(110)
    for d in (4, 16, 64):
        op = make_compressor(f"natural_dither:p={p},s={s}")
        omega = op.omega(d)
        worst = 0.0
        for _ in range(200):
            x = rng.standard_normal(d) * np.abs(rng.standard_normal(d)) ** rng.uniform(0, 4)
            worst = max(worst, exact_mse(op, x) / float(x @ x))
        assert worst <= omega, (d, worst, omega)


@pytest.mark.parametrize("spec", ["randk:k=0.25", "randk:k=0.25,shared=1"])
def test_randk_omega_is_exact(spec):
    """rand-k: ω = d/k − 1 and E‖C(x) − x‖² = ω‖x‖² for any x (two-sided, 5 SE)."""
    case = next(c for c in CASES if c.spec == spec)
    st = stats(case)
    assert st["op"].omega(16) == 16 / 4 - 1
    sq = float(case.x @ case.x)
    assert abs(st["mse"] - 3 * sq) <= Z * st["mse_se"] + 1e-9 * sq
