"""Numerical edge cases and decoder bounds: extreme but valid inputs of every dtype in both kernel
paths, the header's dtype code and flags, finite decoded vectors, indices and lengths read from
a buffer.

Rules checked here (README, "Wire format"):

- both kernel paths write the same bytes and decode the same bits, for every finite input;
- a header's dtype code is a known one and its flags byte is 0 (no operator defines a flag);
- a decoded vector is always finite: a body that would decode to NaN/Inf is a DecodeError,
  and rand-k's encode refuses an input whose kept value × d/k overflows the dtype;
- every index and length a decoder reads is bounded before it is used.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.compress import DecodeError, kernels, make_compressor
from mpicomp.compress.base import HEADER, HEADER_BYTES, MAGIC
from mpicomp.compress.bitpack import pack_fields

KINDS = ["numba", "numpy"] if kernels.HAVE_NUMBA else ["numpy"]
DTYPES = [np.float32, np.float64]
D = 200  # > 64: the sign kernels' whole-word path and its tail both run
OWN_SPECS = [
    "identity", "fp16", "bf16", "sign", "scaled_sign", "scaled_sign:block=3",
    "scaled_sign:block=64", "topk:k=3", "randk:k=3", "randk:k=3,shared=1",
]
OTHER_SPECS = [
    "dither:p=inf,s=5", "dither:p=2,s=3", "dither:p=1,s=2,block=3", "qsgd:s=4",
    "qsgd:s=4,coder=elias", "qsgd:s=3,coder=golomb", "terngrad", "terngrad:pack=trits",
    "terngrad:clip=2.5", "natural", "natural_dither:s=4", "uniform:bits=4",
    "uniform:bits=3,rounding=stochastic", "topk:k=3+natural", "randk:k=50+qsgd:s=2",
]


def extremes(dtype) -> dict[str, np.ndarray]:
    """Vectors of length D at the edges of ``dtype``: ±max, ±min normal, subnormals, −0.0, and
    a mix of huge and tiny values (including max/2, where s − 2s·bit used to overflow)."""
    fi = np.finfo(dtype)
    big, tiny, sub = float(fi.max), float(fi.tiny), float(fi.smallest_subnormal)
    patterns = {
        "max": [big, -big],
        "max_positive": [big],
        "half_max": [big / 2, -big / 2, big / 2],
        "min_normal": [tiny, -tiny, tiny],
        "subnormal": [sub, -sub, 3 * sub, -7 * sub, fi.smallest_normal - sub],
        "negative_zero": [-0.0],
        "mixed": [big, sub, -tiny, -0.0, -big / 3, 1.0, 3 * sub, -big, tiny, 0.0, -sub],
    }
    return {name: np.resize(np.array(p, dtype=dtype), D) for name, p in patterns.items()}


def run(spec: str, x: np.ndarray, kind: str):
    """("ok", payload bytes, decoded vector, decode_add result) or ("error", type, message)."""
    with kernels.forced(kind):
        op = make_compressor(spec)
        try:
            payload = op.encode(x, np.random.default_rng(7))
        except ValueError as exc:
            return "error", type(exc), str(exc)
        y = op.decode(payload.buffer, x.size, x.dtype)
        acc = op.decode_add(payload.buffer, x.size, x.dtype, np.zeros(x.size))
        return "ok", payload.buffer.tobytes(), y, acc


def run_all_kinds(spec: str, x: np.ndarray):
    """The outcome of `run`, checked to be the same in every kernel path (bytes, decoded bits,
    error message), with a finite decoded vector that `decode_add` reproduces."""
    outcomes = [run(spec, x, kind) for kind in KINDS]
    first = outcomes[0]
    for other in outcomes[1:]:
        assert other[0] == first[0], f"{spec}: kernel paths disagree: {first[:3]} vs {other[:3]}"
        if first[0] == "error":
            assert other[1:] == first[1:]
        else:
            assert other[1] == first[1], f"{spec}: kernel paths write different bytes"
            assert other[2].tobytes() == first[2].tobytes(), f"{spec}: decoded bits differ"
    for outcome in outcomes:
        if outcome[0] == "ok":
            _, _, y, acc = outcome
            assert y.dtype == x.dtype and np.isfinite(y).all(), f"{spec}: decoded {y[:6]}"
            np.testing.assert_array_equal(acc, y.astype(np.float64))
    return first


def bf16_candidates(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two bfloat16 neighbours (truncation and one step away from zero) of float32(x)."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.int64)
    down = (bits & ~0xFFFF).astype(np.uint32).view(np.float32)
    up = ((bits & ~0xFFFF) + 0x10000).astype(np.uint32).view(np.float32)
    return down.astype(np.float64), up.astype(np.float64)


BF16_OVERFLOW = (2 - 2**-8) * 2.0**127  # halfway to 2¹²⁸: rounds (to even) past the largest bf16


def abs_as_float32(value: float) -> float:
    """``value`` rounded to float32 as bf16 rounds float64 input first (Inf beyond its range)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def reference_mean_abs(part: np.ndarray) -> float:
    """mean |x_B|, exact, then rounded once (no overflow or underflow on the way)."""
    from fractions import Fraction

    return float(sum(Fraction(float(v)) for v in np.abs(part)) / part.size)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("case", list(extremes(np.float32)))
@pytest.mark.parametrize("spec", OWN_SPECS)
def test_extreme_values(spec, case, dtype):
    x = extremes(dtype)[case]
    fi = np.finfo(dtype)
    outcome = run_all_kinds(spec, x)
    op = make_compressor(spec)
    name = spec.split(":")[0]
    absmax = float(np.abs(x).max())
    if name == "fp16" and absmax > float(np.finfo(np.float16).max):
        assert outcome[0] == "error" and "float16 range" in outcome[2]
        return
    if name == "bf16" and abs_as_float32(absmax) >= BF16_OVERFLOW:
        assert outcome[0] == "error" and "largest finite bfloat16" in outcome[2]
        return
    if name == "randk" and absmax * D / 3 > float(fi.max):
        assert outcome[0] == "error" and outcome[1] is ValueError
        assert "overflows" in outcome[2] and "x[" in outcome[2]
        return
    assert outcome[0] == "ok", outcome
    y = outcome[2]
    if name == "identity":
        assert y.tobytes() == x.tobytes()
    elif name == "fp16":
        np.testing.assert_array_equal(y, x.astype(np.float16).astype(dtype))
    elif name == "bf16":
        down, up = bf16_candidates(x)
        f32 = x.astype(np.float32).astype(np.float64)
        err = np.abs(y.astype(np.float64) - f32)
        assert (err <= np.minimum(np.abs(down - f32), np.abs(up - f32))).all()
        assert (np.signbit(y) == np.signbit(x)).all()
    elif name == "sign":
        np.testing.assert_array_equal(y, np.where(x < 0, -1.0, 1.0).astype(dtype))
    elif name == "scaled_sign":
        block = op.block or D
        for lo in range(0, D, block):
            part, got = x[lo : lo + block], y[lo : lo + block]
            scale = np.abs(got[0])
            assert scale <= np.abs(part).max()
            np.testing.assert_allclose(
                scale, reference_mean_abs(part), rtol=64 * float(fi.eps),
                atol=float(fi.smallest_subnormal)
            )
            assert (got == np.where(part < 0, -scale, scale)).all()
    elif name == "topk":
        kept = np.sort(np.argsort(-np.abs(x), kind="stable")[:3])
        want = np.zeros_like(x)
        want[kept] = x[kept]
        assert y.tobytes() == want.tobytes()
    elif name == "randk":
        kept = np.flatnonzero(y)
        assert kept.size <= 3
        np.testing.assert_array_equal(y[kept], (x[kept].astype(np.float64) * (D / 3)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("case", list(extremes(np.float32)))
@pytest.mark.parametrize("spec", OTHER_SPECS)
def test_extreme_values_other_operators(spec, case, dtype):
    """Operators owned elsewhere: the kernel paths agree and decode finite values, or both
    refuse the input with the same ValueError."""
    run_all_kinds(spec, extremes(dtype)[case])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_scaled_sign_decodes_huge_scales_exactly(kind, dtype):
    big = float(np.finfo(dtype).max)
    x = np.resize(np.array([big, -big, big / 2, -0.75 * big], dtype=dtype), 3 * 64 + 5)
    op = make_compressor("scaled_sign:block=64")
    with kernels.forced(kind):
        p = op.encode(x)
        y = op.decode(p.buffer, x.size, dtype)
        acc = op.decode_add(p.buffer, x.size, dtype, np.zeros(x.size))
    sent = p.buffer[HEADER_BYTES : HEADER_BYTES + 4 * x.itemsize].view(dtype)
    scales = np.repeat(sent, 64)[: x.size]
    np.testing.assert_array_equal(y, np.where(x < 0, -scales, scales))
    np.testing.assert_array_equal(acc, y.astype(np.float64))


def test_scaled_sign_bytes_of_huge_float32_are_unchanged():
    x = np.array([3e38, -3e38, 1e38, -2e38], np.float32)
    for kind in KINDS:
        with kernels.forced(kind):
            assert (make_compressor("scaled_sign").encode(x).buffer.tobytes().hex()
                    == "c5030100040000006c45297f0a")


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_scale_keeps_its_sign_in_both_paths(kind):
    # mean |x| of a float32 block can round to 0 while a sign bit is set: decoded as −0.0
    x = np.zeros(130, np.float32)
    x[0] = -np.finfo(np.float32).smallest_subnormal
    op = make_compressor("scaled_sign")
    with kernels.forced(kind):
        y = op.decode(op.encode(x).buffer, x.size, np.float32)
    assert (y == 0).all() and np.signbit(y[0]) and not np.signbit(y[1:]).any()


# --- the header --------------------------------------------------------------------------------
HEADER_SPECS = OWN_SPECS + OTHER_SPECS[:1] + ["natural", "topk:k=3+natural"]


def encoded(spec: str, d: int = 100, dtype=np.float64):
    x = np.random.default_rng(0).standard_normal(d).astype(dtype)
    op = make_compressor(spec)
    return op, op.encode(x, np.random.default_rng(1)).buffer.copy()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("code", [0, 3, 255])
@pytest.mark.parametrize("spec", HEADER_SPECS)
def test_unknown_dtype_code_is_rejected(spec, code, dtype):
    op, buf = encoded(spec, dtype=dtype)
    buf[2] = code
    with pytest.raises(DecodeError, match=rf"unknown dtype code {code}.*valid codes: "
                                          r"1 \(float32\), 2 \(float64\)"):
        op.decode(buf, 100, dtype)


@pytest.mark.parametrize("flags", [1, 0x80, 0xFF])
@pytest.mark.parametrize("spec", HEADER_SPECS)
def test_reserved_flags_are_rejected(spec, flags):
    op, buf = encoded(spec)
    buf[3] = flags
    with pytest.raises(DecodeError, match=f"reserved header flag bits 0x{flags:02x}"):
        op.decode(buf, 100, np.float64)
    with pytest.raises(DecodeError, match="reserved header flag"):
        op.decode_add(buf, 100, np.float64, np.zeros(100))


def test_huge_header_dimension_is_rejected_before_allocating():
    op, buf = encoded("identity")
    buf[4:8] = np.frombuffer(np.uint32(2**32 - 1).tobytes(), np.uint8)
    with pytest.raises(DecodeError, match="dimension 4294967295, expected 100"):
        op.decode(buf, 100, np.float64)


# --- decoded vectors are finite ----------------------------------------------------------------
def with_value(buf: np.ndarray, offset: int, value, dtype) -> np.ndarray:
    """``buf`` with the little-endian ``dtype`` scalar at byte ``offset`` replaced."""
    out = buf.copy()
    raw = np.array([value], dtype=np.dtype(dtype).newbyteorder("<")).view(np.uint8)
    out[offset : offset + raw.size] = raw
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_identity_rejects_non_finite_body(bad, dtype, kind):
    op, buf = encoded("identity", dtype=dtype)
    buf = with_value(buf, HEADER_BYTES + 37 * np.dtype(dtype).itemsize, bad, dtype)
    out = np.empty(100, dtype)
    with kernels.forced(kind):
        with pytest.raises(DecodeError, match="identity: decoded value at coordinate 37 is"):
            op.decode(buf, 100, dtype)
        with pytest.raises(DecodeError, match="coordinate 37"):
            op.decode(buf, 100, dtype, out=out)
        with pytest.raises(DecodeError, match="coordinate 37"):
            op.decode_add(buf, 100, dtype, np.zeros(100))


@pytest.mark.parametrize("kind", KINDS)
def test_identity_decodes_into_out(kind):
    x = np.random.default_rng(3).standard_normal(1001).astype(np.float32)
    op = make_compressor("identity")
    out = np.full(1001, np.nan, np.float32)
    with kernels.forced(kind):
        assert op.decode(op.encode(x).buffer, 1001, np.float32, out=out) is out
    assert out.tobytes() == x.tobytes()


@pytest.mark.parametrize("spec,offset,raw_type,raw,what", [
    ("fp16", 2 * 5, np.float16, np.inf, "fp16: decoded value at coordinate 5 is inf"),
    ("bf16", 2 * 5, np.uint16, 0x7FC0, "bf16: decoded value at coordinate 5 is nan"),
    ("topk:k=3", 4, np.float32, -np.inf, r"topk:k=3: decoded kept value at coordinate \d+ is -inf"),
    ("randk:k=3", 0, np.float32, np.nan, r"randk:k=3: decoded kept value at coordinate \d+ is nan"),
])
@pytest.mark.parametrize("kind", KINDS)
def test_casts_and_sparsifiers_reject_non_finite_body(spec, offset, raw_type, raw, what, kind):
    op, buf = encoded(spec, dtype=np.float32)
    buf = with_value(buf, HEADER_BYTES + offset, raw, raw_type)
    with kernels.forced(kind), pytest.raises(DecodeError, match=what):
        op.decode(buf, 100, np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("spec", ["randk:k=3", "randk:k=3,shared=1"])
def test_randk_rejects_values_that_overflow_when_scaled(spec, dtype, kind):
    big = float(np.finfo(dtype).max)
    x = np.zeros(100, dtype)
    x[:] = big / 10  # × d/k = 100/3 overflows wherever it is kept
    with kernels.forced(kind), pytest.raises(ValueError,
                                             match=r"x\[\d+\] = .* times d/k = 33.3333 overflows"):
        make_compressor(spec).encode(x, np.random.default_rng(0))
    x[:] = big / 40  # fits
    op = make_compressor(spec)
    with kernels.forced(kind):
        p = op.encode(x, np.random.default_rng(0))
        y = op.decode(p.buffer, 100, dtype)
    assert np.isfinite(y).all() and np.count_nonzero(y) == 3
    # a finite kept value that overflows once scaled: the decoder refuses it
    extra = 8 if "shared" in spec else 0
    buf = with_value(p.buffer, HEADER_BYTES + extra, big, dtype)
    with kernels.forced(kind), pytest.raises(DecodeError,
                                             match=r"value × d/k at coordinate \d+ is inf"):
        op.decode(buf, 100, dtype)


# --- bounds on indices and lengths -------------------------------------------------------------
def sparse_payload(spec: str, d: int, values: np.ndarray, section: np.ndarray) -> np.ndarray:
    """A hand-made top-k/rand-k payload: header, float32 values, index section bytes."""
    op = make_compressor(spec)
    header = np.frombuffer(HEADER.pack(MAGIC, op.code, 1, 0, d), np.uint8)
    return np.concatenate([header, values.astype("<f4").view(np.uint8), section.astype(np.uint8)])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spec", ["topk:k=5", "randk:k=5"])
@pytest.mark.parametrize("indices,match", [
    ([3, 9, 9, 20, 40],
     "entry 2 \\(9\\) does not exceed entry 1 \\(9\\); indices must strictly increase"),
    ([3, 9, 8, 20, 40], "entry 2 \\(8\\) does not exceed entry 1"),
    ([3, 9, 20, 40, 1010], "index 1010 is not below d = 1000"),
    ([0, 1, 2, 3, 1023], "index 1023 is not below d = 1000"),
])
def test_packed_index_list_is_bounded(spec, indices, match, kind):
    with kernels.forced(kind):
        section = pack_fields(np.array(indices, np.uint32), 10)  # ⌈log₂ 1000⌉ = 10 bits
        buf = sparse_payload(spec, 1000, np.ones(5), section)
        with pytest.raises(DecodeError, match=match):
            make_compressor(spec).decode(buf, 1000, np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("set_bits", [199, 201, 0])
def test_index_bitmap_count_is_checked(set_bits, kind):
    d, k = 1000, 200  # 200 · 10 bits > 1000: a bitmap
    mask = np.zeros(d, bool)
    mask[np.arange(set_bits) * 4] = True
    buf = sparse_payload("topk:k=200", d, np.ones(k), np.packbits(mask, bitorder="little"))
    with kernels.forced(kind), pytest.raises(DecodeError,
                                             match=f"{set_bits} bits set, expected k = 200"):
        make_compressor("topk:k=200").decode(buf, d, np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spec", ["identity", "fp16", "bf16", "topk:k=3", "randk:k=3", "sign",
                                  "scaled_sign:block=7"])
@pytest.mark.parametrize("delta", [-1, 1, -8])
def test_body_length_is_exact(spec, delta, kind):
    op, buf = encoded(spec, dtype=np.float32)
    bad = buf[:delta] if delta < 0 else np.concatenate([buf, np.zeros(delta, np.uint8)])
    with kernels.forced(kind), pytest.raises(DecodeError, match="truncated|too long"):
        op.decode(bad, 100, np.float32)
    with kernels.forced(kind), pytest.raises(DecodeError, match="truncated|too long"):
        op.decode_add(bad, 100, np.float32, np.zeros(100))


@pytest.mark.parametrize("spec", ["topk:k=20", "randk:k=20", "randk:k=20,shared=1"])
def test_k_above_d_is_a_decode_error(spec):
    header = np.frombuffer(HEADER.pack(MAGIC, make_compressor(spec).code, 1, 0, 10), np.uint8)
    buf = np.concatenate([header, np.zeros(100, np.uint8)])
    with pytest.raises(DecodeError, match="k=20 exceeds the dimension d=10"):
        make_compressor(spec).decode(buf, 10, np.float32)
