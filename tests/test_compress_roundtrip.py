"""Round trip, exact bit counts and wire sizes of every operator (SPEC §1, §6), against the
independent references in `reference_ops`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference_ops as ref

from mpicomp.compress import kernels, make_compressor
from mpicomp.compress.base import HEADER_BYTES

SIZES = [0, 1, 7, 8, 1025, 2**20 + 3]
DTYPES = [np.float32, np.float64]
SEED = 12345


def vector(d, dtype, seed=0):
    rng = np.random.default_rng(seed + d)
    x = rng.standard_normal(d) * np.exp(rng.uniform(-3, 3, d))
    if d > 10:
        x[3] = 0.0  # exact zeros must survive every operator
        x[5] = -x[4]
    return x.astype(dtype)


def encode(spec, x):
    op = make_compressor(spec)
    payload = op.encode(x, np.random.default_rng(SEED))
    return op, payload, op.decode(payload.buffer, x.size, x.dtype)


def w(dtype):
    return 8 * np.dtype(dtype).itemsize


def nblocks(d, block):
    return len(ref.blocks(d, block))


def lev_bits(s):
    return math.ceil(math.log2(s + 1))


def check_size(op, payload, nbits, extra=0):
    assert payload.nbits == nbits
    assert payload.nbytes == HEADER_BYTES + extra + math.ceil(nbits / 8)
    assert payload.buffer.dtype == np.uint8 and payload.buffer.flags.c_contiguous


@pytest.fixture(params=SIZES, ids=lambda d: f"d{d}")
def d(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda t: np.dtype(t).name)
def dtype(request):
    return request.param


def test_identity(d, dtype):
    x = vector(d, dtype)
    op, p, y = encode("identity", x)
    assert y.dtype == dtype and np.array_equal(y, x)
    check_size(op, p, w(dtype) * d)


@pytest.mark.parametrize("spec,cast", [("fp16", np.float16)])
def test_fp16(d, dtype, spec, cast):
    x = (vector(d, dtype) / 100).clip(-6e4, 6e4).astype(dtype)
    op, p, y = encode(spec, x)
    assert np.array_equal(y, x.astype(cast).astype(dtype))
    check_size(op, p, 16 * d)


def test_bf16_is_nearest_even(d, dtype):
    x = vector(d, dtype)
    op, p, y = encode("bf16", x)
    f32 = x.astype(np.float32)
    bits = f32.view(np.uint32).astype(np.int64)
    down = (bits & ~0xFFFF).astype(np.uint32).view(np.float32).astype(np.float64)
    up = ((bits & ~0xFFFF) + 0x10000).astype(np.uint32).view(np.float32).astype(np.float64)
    yv = y.astype(np.float64)
    assert (y.astype(np.float32).view(np.uint32) & 0xFFFF == 0).all()  # representable in bf16
    err = np.abs(yv - f32)
    assert (err <= np.minimum(np.abs(down - f32), np.abs(up - f32))).all()  # nearest
    check_size(op, p, 16 * d)


def test_sign(d, dtype):
    x = vector(d, dtype)
    op, p, y = encode("sign", x)
    assert np.array_equal(y, np.where(x < 0, -1.0, 1.0).astype(dtype))  # sign(0) = +1
    check_size(op, p, d)


@pytest.mark.parametrize("block", [0, 7, 512])
def test_scaled_sign(d, dtype, block):
    x = vector(d, dtype)
    op, p, y = encode(f"scaled_sign:block={block}", x)
    want = np.zeros(d)
    for lo, hi in ref.blocks(d, block):
        scale = np.abs(x[lo:hi].astype(np.float64)).mean()
        want[lo:hi] = np.where(x[lo:hi] < 0, -scale, scale)
    np.testing.assert_allclose(y, want, rtol=2e-7 if dtype == np.float32 else 1e-14)
    check_size(op, p, d + w(dtype) * nblocks(d, block))


DITHERS = [
    ("dither:p=2,s=1", 2, 1, 0),
    ("dither:p=inf,s=1,block=7", math.inf, 1, 7),
    ("dither:p=1,s=3,block=512", 1, 3, 512),
    ("qsgd:s=4", 2, 4, 0),
    ("qsgd:s=16,block=512", 2, 16, 512),
    ("terngrad:block=100", math.inf, 1, 100),
]


@pytest.mark.parametrize("spec,p,s,block", DITHERS, ids=[t[0] for t in DITHERS])
def test_dither_family(d, dtype, spec, p, s, block):
    x = vector(d, dtype)
    op, p_, y = encode(spec, x)
    want = ref.dither_value(x, p_, p, s, block, SEED)
    np.testing.assert_allclose(y, want, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)
    check_size(op, p_, w(dtype) * nblocks(d, block) + d * (1 + lev_bits(s)))


@pytest.mark.parametrize("s", [1, 4, 7])
def test_qsgd_elias_same_values_exact_length(d, dtype, s):
    x = vector(d, dtype)
    _, dense, y_dense = encode(f"qsgd:s={s},block=64", x)
    op, p, y = encode(f"qsgd:s={s},block=64,coder=elias", x)
    assert np.array_equal(y, y_dense)  # same draws, same levels: only the wire format differs
    # Elias-γ length: 2⌊log₂n⌋ + 1 for each gap and each level, plus a sign bit
    levels = np.rint(np.abs(y_dense.astype(np.float64)) / np.repeat(
        ref.sent_scalars(dense, nblocks(d, 64), dtype) / s, 64)[:d]).astype(np.int64)
    nz = np.flatnonzero(levels)
    gaps = np.diff(np.concatenate([[-1], nz]))
    gamma = lambda n: 2 * np.floor(np.log2(n)).astype(np.int64) + 1  # noqa: E731
    coded = int(gamma(gaps).sum() + nz.size + gamma(levels[nz]).sum()) if nz.size else 0
    check_size(op, p, w(dtype) * nblocks(d, 64) + coded, extra=4)
    assert p.nbits <= op.max_body_bits(d, dtype)


def test_terngrad_trits_pack_five_per_byte(d, dtype):
    x = vector(d, dtype)
    _, _, y_bits = encode("terngrad:block=100", x)
    op, p, y = encode("terngrad:block=100,pack=trits", x)
    assert np.array_equal(y, y_bits)
    check_size(op, p, w(dtype) * nblocks(d, 100) + 8 * math.ceil(d / 5))


def test_terngrad_clipping_bounds_levels():
    x = vector(4096, np.float32)
    x[10] = 1e4  # an outlier that clipping must cut to 2.5σ
    op, p, y = encode("terngrad:clip=2.5", x)
    sigma = np.std(x.astype(np.float64))
    nu = ref.sent_scalars(p, 1, np.float32)[0]
    assert nu <= 2.5 * sigma * (1 + 1e-6)
    assert set(np.unique(np.abs(y))) <= {0.0, np.float32(nu)}
    assert not op.unbiased and op.omega(4096) is None


def test_natural(d, dtype):
    x = vector(d, dtype)
    op, p, y = encode("natural", x)
    assert np.array_equal(y, ref.natural_value(x, SEED).astype(dtype))
    check_size(op, p, d * (9 if dtype == np.float32 else 12))


def test_natural_subnormals_and_zero():
    tiny = np.finfo(np.float32).tiny
    x = np.array([0.0, tiny / 4, -tiny / 2, tiny, 3 * tiny], dtype=np.float32)
    rng = np.random.default_rng(0)
    op = make_compressor("natural")
    outs = np.array([op(x, rng) for _ in range(4000)], dtype=np.float64)
    assert (outs[:, 0] == 0).all()
    assert set(np.unique(np.abs(outs[:, 1]))) <= {0.0, float(tiny)}
    np.testing.assert_allclose(outs[:, 1:3].mean(0), x[1:3], rtol=0.1)  # unbiased (4000 draws)
    assert (outs[:, 3] == tiny).all()


@pytest.mark.parametrize("spec,p,s,block", [("natural_dither:s=8", 2, 8, 0),
                                            ("natural_dither:p=inf,s=3,block=5", math.inf, 3, 5)])
def test_natural_dither(d, dtype, spec, p, s, block):
    x = vector(d, dtype)
    op, p_, y = encode(spec, x)
    np.testing.assert_allclose(y, ref.natural_dither_value(x, p_, p, s, block, SEED), rtol=1e-6,
                               atol=0)
    check_size(op, p_, w(dtype) * nblocks(d, block) + d * (1 + lev_bits(s)))


@pytest.mark.parametrize("k", [0.01, 0.5, 3])
def test_topk(d, dtype, k):
    x = vector(d, dtype)
    if isinstance(k, int) and k > d:
        pytest.skip("k > d is tested as bad input")
    op, p, y = encode(f"topk:k={k}", x)
    kk = op.k_of(d)
    idx = ref.topk_indices(x, kk)
    want = np.zeros(d, dtype)
    want[idx] = x[idx]
    assert np.array_equal(y, want)
    check_size(op, p, kk * w(dtype) + ref.index_bits(kk, d))


def test_topk_ties_go_to_lowest_indices():
    x = np.array([1, -3, 3, 2, 3, -3, 0.5], dtype=np.float32)
    y = make_compressor("topk:k=3")(x)
    assert np.array_equal(np.flatnonzero(y), [1, 2, 4])


@pytest.mark.parametrize("shared", [0, 1])
@pytest.mark.parametrize("k", [0.01, 0.5])
def test_randk(d, dtype, k, shared):
    x = vector(d, dtype)
    op, p, y = encode(f"randk:k={k},shared={shared}", x)
    kk = op.k_of(d)
    support = np.flatnonzero(y)
    keep = np.flatnonzero(x != 0)
    assert set(support) <= set(keep) and len(support) >= kk - (d - keep.size)
    np.testing.assert_allclose(y[support], x[support].astype(np.float64) * d / kk, rtol=1e-6)
    check_size(op, p, kk * w(dtype) + (0 if shared else ref.index_bits(kk, d)), extra=8 * shared)


def test_randk_shared_key_picks_same_coordinates_on_every_rank():
    op = make_compressor("randk:k=100,shared=1")
    a, b = vector(5000, np.float32, 1), vector(5000, np.float32, 2)
    ya = op(a, np.random.default_rng(7))  # "two ranks" with generators in the same state
    yb = op(b, np.random.default_rng(7))
    assert np.array_equal(np.flatnonzero(ya), np.flatnonzero(yb))
    yc = op(b, np.random.default_rng(8))
    assert not np.array_equal(np.flatnonzero(yb), np.flatnonzero(yc))


def test_composition_topk_natural(d, dtype):
    x = vector(d, dtype)
    op, p, y = encode("topk:k=0.05+natural", x)
    k = op.outer.k_of(d)
    idx = ref.topk_indices(x, k)
    want = np.zeros(d)
    want[idx] = ref.natural_value(np.ascontiguousarray(x[idx]), SEED)
    assert np.array_equal(y, want.astype(dtype))
    check_size(op, p, ref.index_bits(k, d) + k * (9 if dtype == np.float32 else 12))
    assert op.delta(d) == pytest.approx((k / d if d else 1.0) * (1 - 1 / 8))


def test_composition_with_variable_size_inner(d, dtype):
    x = vector(d, dtype)
    op, p, y = encode("randk:k=0.5+qsgd:s=2,coder=elias", x)
    k = op.outer.k_of(d)
    assert np.count_nonzero(y) <= k
    # B's bit count travels in the header; the body is exactly index bits + B's bits
    assert p.nbytes == HEADER_BYTES + 4 + 4 + math.ceil(p.nbits / 8)
    if d:
        wa, wb = d / k - 1, op.inner.omega(k)
        assert op.omega(d) == pytest.approx(wa * wb + wa + wb)


ALL_SPECS = [
    "identity", "fp16", "bf16", "sign", "scaled_sign:block=7", "dither:p=inf,s=5,block=300",
    "qsgd:s=4,block=512", "qsgd:s=7,coder=elias", "qsgd:s=5,block=300,coder=golomb", "terngrad",
    "terngrad:pack=trits", "natural",
    "natural_dither:s=8", "natural_dither:p=1,s=3,block=4", "topk:k=0.01", "randk:k=0.02",
    "randk:k=0.02,shared=1", "topk:k=0.3+natural", "randk:k=0.5+qsgd:s=2", "uniform:bits=3,block=5",
    "uniform:bits=8,rounding=stochastic",
]


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="needs numba to compare the two kernel paths")
@pytest.mark.parametrize("spec", ALL_SPECS)
def test_numba_and_numpy_paths_write_identical_bytes(spec, d, dtype):
    x = vector(d, dtype) / 1e3
    out = {}
    for kind in ("numba", "numpy"):
        with kernels.forced(kind):
            op = make_compressor(spec)
            p = op.encode(x, np.random.default_rng(SEED))
            out[kind] = (p.buffer.tobytes(), op.decode(p.buffer, d, dtype).tobytes())
    assert out["numba"] == out["numpy"]


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_nbytes_max_bounds_every_buffer(spec):
    op = make_compressor(spec)
    for d in (1, 100, 4097):
        x = vector(d, np.float32) / 1e3
        p = op.encode(x, np.random.default_rng(0))
        assert p.nbytes <= op.nbytes_max(d, np.float32)
        if op.fixed_size:
            assert p.nbytes == op.nbytes_max(d, np.float32)


def test_spec_strings_round_trip():
    for spec in ALL_SPECS + ["dither:p=1,s=2", "scaled_sign", "topk:k=5"]:
        op = make_compressor(spec)
        assert make_compressor(op.spec()).spec() == op.spec()


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_decode_add_equals_decode_then_add(spec, dtype):
    op = make_compressor(spec)
    d = 4099
    x = vector(d, dtype) / 1e3
    p = op.encode(x, np.random.default_rng(SEED))
    start = np.random.default_rng(1).standard_normal(d)
    acc = start.copy()
    op.decode_add(p.buffer, d, dtype, acc)
    assert np.array_equal(acc, start + op.decode(p.buffer, d, dtype).astype(np.float64))
    with pytest.raises(ValueError, match="float64 vector of length"):
        op.decode_add(p.buffer, d, dtype, acc.astype(np.float32))
